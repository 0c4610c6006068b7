package sink

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// PartitionStatus is one partition of a read model's topics: the offset
// stored with the rows (the next to apply; -1 none stored), the topic's
// end offset, and the records between.
type PartitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Stored    int64  `json:"stored_offset"`
	End       int64  `json:"end_offset"`
	Lag       int64  `json:"lag_records"`
}

// ModelStatus is a read model's progress, as `replicator status` shows it.
type ModelStatus struct {
	Partitions []PartitionStatus // by topic, then partition
	Lag        int64             // summed over the partitions
	// Missed are the partitions that may have missed tombstones
	// ([CheckLag]).
	Missed []Lag
	// Stopped is the error a sink process of the read model stopped with,
	// nil unless it stopped with one and none started since.
	Stopped *Stopped
}

// ReadStatus reads, without writing anything, a read model's stored
// offsets from its store's replicator_sink_offsets and compares them with
// its topics' end offsets (adm), and its recorded stop (failuresTable). A store where the sink never ran has no
// offsets: every record is lag.
// Its errors do not name the read model: the caller, which reports it,
// does.
func ReadStatus(ctx context.Context, m ReadModel, storeURL string, adm *kadm.Client, now time.Time) (ModelStatus, error) {
	var out ModelStatus
	stored, stopped, lost, err := readStoredOffsets(ctx, m.Name, m.Table, storeURL)
	if err != nil {
		return out, err
	}
	out.Stopped = stopped
	topics := make([]string, len(m.Sources))
	for i, src := range m.Sources {
		topics[i] = src.Topic
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return out, fmt.Errorf("list end offsets: %w", err)
	}
	var errs []error
	if lost != nil {
		errs = append(errs, lost)
	}
	for _, t := range topics {
		parts := ends[t]
		for _, p := range slices.Sorted(maps.Keys(parts)) {
			o := parts[p]
			if o.Err != nil {
				errs = append(errs, fmt.Errorf("topic %s partition %d: %w", t, p, o.Err))
				continue
			}
			ps := PartitionStatus{Topic: t, Partition: p, Stored: -1, End: o.Offset}
			if s, ok := stored[tp{t, p}]; ok {
				ps.Stored = s.next
			}
			ps.Lag = max(0, ps.End-max(ps.Stored, 0))
			out.Lag += ps.Lag
			out.Partitions = append(out.Partitions, ps)
		}
	}
	if len(stored) > 0 {
		out.Missed, err = missedTombstones(ctx, adm, stored, m.Name, topics, now)
		if err != nil {
			errs = append(errs, err)
		}
		slices.SortFunc(out.Missed, func(a, b Lag) int {
			if c := strings.Compare(a.Topic, b.Topic); c != 0 {
				return c
			}
			return int(a.Partition - b.Partition)
		})
	}
	return out, errors.Join(errs...)
}

// readStoredOffsets reads a read model's stored offsets, none when the
// sink never ran there, and its recorded stop; lost is
// [store.lostTable]'s verdict on its table. A SQLite file that does not
// exist is not created.
func readStoredOffsets(ctx context.Context, model, table, storeURL string) (stored map[tp]offsetRow, stopped *Stopped, lost, err error) {
	if path, ok := strings.CutPrefix(storeURL, "sqlite://"); ok {
		path, _, _ = strings.Cut(path, "?")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil, nil
		}
	}
	db, d, err := openStore(storeURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("store: %w", err)
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("store %s does not answer: %w", d.name(), err)
	}
	st := &store{db: db, d: d}
	if stopped, err = st.loadStop(ctx, model); err != nil {
		return nil, nil, nil, err
	}
	cols, err := d.columns(ctx, db, offsetsTable)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read the columns of %s: %w", offsetsTable, err)
	}
	if cols == nil {
		return nil, stopped, nil, nil
	}
	if stored, err = st.loadOffsets(ctx, model); err != nil {
		return nil, nil, nil, fmt.Errorf("read the stored offsets: %w", err)
	}
	return stored, stopped, st.lostTable(ctx, model, table), nil
}
