package sink

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// failuresTable holds, per read model, the error its sink last stopped
// with: the sink process's /healthz says it while it lives, and this is
// how `replicator status` and `replicator check`, which read the store,
// learn it. A row means "a sink process of this read model stopped with
// this error"; the next start of any process of it clears it.
const failuresTable = "replicator_sink_failures"

// maxStoppedError bounds the error text kept (bytes).
const maxStoppedError = 4096

// recordTimeout bounds the recording of a stop: the store may be what
// failed.
const recordTimeout = 5 * time.Second

// Stopped is a read model's recorded stop: when its sink stopped with an
// error, and the error.
type Stopped struct {
	At    time.Time
	Error string
}

// recordStop writes runErr as the read model's stop, best effort on a
// connection of its own (the run's is closed by now, or never opened): a
// store that is itself what failed cannot take it, which is logged, and
// status then reports that store's error anyway.
func (s *Sink) recordStop(ctx context.Context, runErr error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := recordStop(ctx, s.cfg.StoreURL, s.cfg.Model.Name, time.Now(), runErr.Error()); err != nil {
		s.log.Warn("could not record the stop in the store: `replicator status` does not show it", "table", failuresTable, "error", err)
	}
}

func recordStop(ctx context.Context, storeURL, model string, at time.Time, msg string) error {
	db, d, err := openStore(storeURL)
	if err != nil {
		return err
	}
	defer db.Close()
	// Run's errors begin with the read model's name, which status says
	// before them.
	msg = strings.ToValidUTF8(strings.TrimPrefix(msg, "read model "+model+": "), "?")
	if len(msg) > maxStoppedError {
		cut := maxStoppedError
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	q := fmt.Sprintf(`INSERT INTO %s (read_model, failed_at, %s) VALUES (%s, %s, %s)%s`,
		d.quote(failuresTable), d.quote("error"), d.param(1), d.param(2), d.param(3),
		d.onConflict([]string{"read_model"}, []string{"failed_at", "error"}))
	if _, err := db.ExecContext(ctx, q, model, at.UnixMilli(), msg); err != nil {
		return fmt.Errorf("write the stop into %s: %w", failuresTable, err)
	}
	return nil
}

// clearStop deletes the read model's recorded stop: its sink started.
func (s *store) clearStop(ctx context.Context, model string) error {
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %s WHERE read_model = %s`, s.d.quote(failuresTable), s.d.param(1)), model); err != nil {
		return fmt.Errorf("clear the recorded stop in %s: %w", failuresTable, err)
	}
	return nil
}

// loadStop reads the read model's recorded stop; nil when none (or the
// table is not there: a store of a sink before it).
func (s *store) loadStop(ctx context.Context, model string) (*Stopped, error) {
	cols, err := s.d.columns(ctx, s.db, failuresTable)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", failuresTable, err)
	}
	if cols == nil {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT failed_at, %s FROM %s WHERE read_model = %s`,
		s.d.quote("error"), s.d.quote(failuresTable), s.d.param(1)), model)
	if err != nil {
		return nil, fmt.Errorf("read the recorded stop in %s: %w", failuresTable, err)
	}
	defer rows.Close()
	var out *Stopped
	for rows.Next() {
		var at int64
		var msg string
		if err := rows.Scan(&at, &msg); err != nil {
			return nil, fmt.Errorf("read the recorded stop in %s: %w", failuresTable, err)
		}
		out = &Stopped{At: time.UnixMilli(at).UTC(), Error: msg}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the recorded stop in %s: %w", failuresTable, err)
	}
	return out, nil
}

// Message is the stop of read model model as `replicator check` and
// `replicator status` say it.
func (st *Stopped) Message(model string) string {
	return fmt.Sprintf("read model %s stopped at %s: %s: fix the cause and start `replicator sink` again",
		model, st.At.Format(time.RFC3339), st.Error)
}
