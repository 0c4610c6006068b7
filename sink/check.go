package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// checkStepTimeout bounds each party [Check] asks: the store, the broker,
// the registry.
const checkStepTimeout = 15 * time.Second

// Check reports, without writing anything, what would stop the read model
// at start (the store unreachable, a topic or subject missing, a needed
// field absent, an existing table that does not fit: [fitTable]) as
// problems, and what deserves attention (the table will be created; a
// column of bounded length; a column whose type differs from its `type:`
// in the config, which a rebuild applies) as notes. Missed tombstones
// ([Lag]) are problems, and so is a recorded stop ([Stopped]). On MySQL/MariaDB a `type:` is compared with the
// column's through a temporary table (the session's own, dropped at once).
func Check(ctx context.Context, cfg Config) (notes []string, problems []error) {
	s, err := New(cfg)
	if err != nil {
		return nil, []error{err}
	}
	m := &s.cfg.Model
	db, d, err := openStore(cfg.StoreURL)
	if err != nil {
		return nil, []error{fmt.Errorf("store: %w", err)}
	}
	defer db.Close()
	pctx, cancel := context.WithTimeout(ctx, checkStepTimeout)
	defer func() { cancel() }()
	// storeAgain gives the store's reads a new bound after the broker or
	// the registry was asked (and may have taken theirs).
	storeAgain := func() {
		cancel()
		pctx, cancel = context.WithTimeout(ctx, checkStepTimeout)
	}
	if err := db.PingContext(pctx); err != nil {
		return nil, []error{fmt.Errorf("store %s does not answer: %w", d.name(), err)}
	}
	st := &store{db: db, d: d}

	cl, err := kgo.NewClient(cfg.Kafka...)
	if err != nil {
		return nil, []error{fmt.Errorf("kafka client: %w", err)}
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics := make([]string, len(m.Sources))
	for i, src := range m.Sources {
		topics[i] = src.Topic
	}
	// The broker and the registry each get a bound of their own: one that
	// does not answer must not use up the store's, whose reads would then
	// fail as if the store were what is down.
	kctx, kcancel := context.WithTimeout(ctx, checkStepTimeout)
	details, err := adm.ListTopics(kctx, topics...)
	kcancel()
	storeAgain()
	brokerAnswered := err == nil
	if err != nil {
		problems = append(problems, fmt.Errorf("list topics: %w", err))
	} else {
		for _, t := range topics {
			if td, ok := details[t]; !ok || td.Err != nil {
				problems = append(problems, fmt.Errorf("topic %s does not exist (is `replicator run` exporting it? check the source's entity: or topic:)", t))
			}
		}
	}

	if stopped, err := st.loadStop(pctx, m.Name); err != nil {
		problems = append(problems, err)
	} else if stopped != nil {
		problems = append(problems, errors.New(stopped.Message(m.Name)))
	}

	rctx, rcancel := context.WithTimeout(ctx, checkStepTimeout)
	p, err := compile(rctx, m, cfg.Registry, newAPI())
	rcancel()
	storeAgain()
	if err != nil {
		return notes, append(problems, err)
	}
	have, err := d.columns(pctx, db, m.Table)
	switch {
	case err != nil:
		problems = append(problems, fmt.Errorf("read the columns of table %s: %w", d.quote(m.Table), err))
	case have == nil:
		if err := st.lostTable(pctx, m.Name, m.Table); err != nil {
			problems = append(problems, err)
			break
		}
		notes = append(notes, fmt.Sprintf("table %s does not exist yet: the sink creates it", d.quote(m.Table)))
	default:
		desc, err := d.describe(pctx, db, m.Table)
		if err != nil {
			problems = append(problems, fmt.Errorf("read the columns and keys of table %s: %w", d.quote(m.Table), err))
			break
		}
		if desc == nil {
			notes = append(notes, fmt.Sprintf("table %s does not exist yet: the sink creates it", d.quote(m.Table)))
			break
		}
		n, ps := fitTable(d, p, desc)
		notes = append(notes, n...)
		problems = append(problems, ps...)
		n, ps = st.overrideNotes(pctx, p, desc)
		notes = append(notes, n...)
		problems = append(problems, ps...)
	}
	// A rebuild's table beside the live one: a rebuild runs now, or one
	// ended before its swap and left it (with its rows) for the next to
	// remove.
	if cols, err := d.columns(pctx, db, m.Table+rebuildSuffix); err == nil && cols != nil {
		notes = append(notes, fmt.Sprintf("table %s is a rebuild's: a rebuild of read model %s runs now, or one ended before its swap (killed, failed) and left it; the next rebuild removes it, or drop it (DROP TABLE %s) when none runs",
			d.quote(m.Table+rebuildSuffix), m.Name, d.quote(m.Table+rebuildSuffix)))
	}
	if cols, err := d.columns(pctx, db, offsetsTable); err == nil && cols != nil && brokerAnswered {
		lctx, lcancel := context.WithTimeout(ctx, checkStepTimeout)
		lags, err := CheckLag(lctx, adm, st, m.Name, topics, time.Now())
		lcancel()
		if err != nil {
			problems = append(problems, err)
		}
		for _, l := range lags {
			problems = append(problems, errors.New(l.String()))
		}
	}
	return notes, problems
}
