package sink

import (
	"context"
	"database/sql"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/replicator/replicator/broker"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// rebuildSuffix names the table and the offsets/side rows a rebuild builds
// beside the live ones.
const rebuildSuffix = "__rebuild"

// oldSuffix names the live table while a swap moves it away.
const oldSuffix = "__old"

// Progress is how far a rebuild is: Done records applied of Total, the
// records between the log start and end offsets of every partition when
// it started (plus those a running sink applied meanwhile, which the
// rebuild catches up with). Total is an estimate: compaction leaves gaps
// in the offsets it counts, so a rebuild of a compacted topic ends before
// Done reaches it; and records produced since the start, which the
// rebuild reads too, are not in it, so Total follows Done once Done
// passes it (the bar then shows full while the rebuild catches up). The
// last Progress, once
// the rebuilt table is swapped in, has Swapped set and Total equal to
// Done.
type Progress struct {
	Done, Total int64
	Elapsed     time.Duration
	Swapped     bool
}

// Rebuild builds the read model again from offset zero into a new table
// (<table>__rebuild, with its own offsets and side rows), then swaps it in:
// in one transaction (PostgreSQL, SQLite) the new table takes the read
// model's name, the old one is dropped, and the read model's offsets and
// side rows become the rebuild's. Queries see the old table until the
// commit and the whole new one after it.
//
// A `replicator sink` running meanwhile keeps the old table up to date
// until the swap. The rebuild catches up with the live read model's stored
// offsets before it swaps, and the swap locks them and checks again, so
// at the swap the rebuilt table is at or past the live position on every
// partition: the sink either goes on from the same position into the new
// table or, on its next batch, finds the stored offsets moved (the
// compare-and-set), rolls back and resumes from the rebuild's. Nothing
// consumed during the rebuild is lost. On MySQL/MariaDB, whose DDL
// commits by itself, the swap is three atomic steps with the offsets as
// their journal (rebuild_mysql.go); the guarantees are the same.
//
// A partition added to a source topic while the rebuild runs is read from
// its start before the swap: the partitions are listed again before each
// attempt, and those the live offsets name are taken in too.
//
// One rebuild of a read model runs at a time (rebuildlock.go): a second
// one fails at once with an error saying another rebuild is running. A
// rebuild whose lock is lost before its swap commits (the lock's session
// ended) fails saying so, and swaps nothing.
//
// progress, if set, is called after each batch, and once more after the
// swap (Swapped set).
func Rebuild(ctx context.Context, cfg Config, progress func(Progress)) error {
	liveModel := cfg.Model
	shadow := liveModel
	shadow.Name = liveModel.Name + rebuildSuffix
	shadow.Table = liveModel.Table + rebuildSuffix
	// Built as the live read model, so that messages, logs and
	// dead-letter headers name the read model the user knows; then
	// pointed at the shadow's table and stored rows.
	s, err := New(cfg)
	if err != nil {
		return err
	}
	s.cfg.Model = shadow
	s.likeTable = liveModel.Table
	s.log = s.log.With("rebuild", true)
	if pct := cfg.RebuildGCPercent; pct > 0 {
		prev := debug.SetGCPercent(pct)
		defer debug.SetGCPercent(prev)
	}
	// Held until the rebuild returns: a second rebuild would remove this
	// one's shadow table as left over (prepareRebuild).
	lock, err := lockRebuild(ctx, cfg.StoreURL, liveModel.Name)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := s.prepareRebuild(ctx, liveModel); err != nil {
		return err
	}
	defer s.st.db.Close()

	topics := make([]string, len(shadow.Sources))
	for i, src := range shadow.Sources {
		topics[i] = src.Topic
	}
	// A direct consumer of the partitions listed below, not of the topics:
	// kgo would find a partition added meanwhile only at its next metadata
	// refresh (up to 5 min), and process would drop its records. The
	// rebuild takes each partition in itself, from offset zero (takeIn).
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, cfg.Kafka...),
		// Records removed meanwhile (compaction, retention): go on from
		// the new log start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return fmt.Errorf("read model %s: kafka client: %w", liveModel.Name, err)
	}
	defer cl.Close()
	s.cl = cl
	if shadow.OnError == DeadLetter {
		if err := s.ensureDeadLetterTopic(ctx); err != nil {
			return err
		}
	}
	// target: how far the rebuild must have applied, per partition,
	// before it may swap: the end offsets at start, then the live read
	// model's stored offsets (a running sink moves them on). total: the
	// records up to the targets, from each partition's log start.
	target := map[tp]int64{}
	var total int64
	// takeIn starts consuming the partitions of ends the rebuild does not
	// read yet, from their start (starts: their log start offsets, nil
	// when not known), and makes their ends targets; it returns how many
	// it took in.
	takeIn := func(ends, starts map[tp]int64, why string) int {
		add := map[string]map[int32]kgo.Offset{}
		n := 0
		s.mu.Lock()
		for k, end := range ends {
			if _, ok := s.expected[k]; ok {
				continue
			}
			s.expected[k] = -1
			target[k] = max(target[k], end)
			total += end - min(starts[k], end)
			if add[k.topic] == nil {
				add[k.topic] = map[int32]kgo.Offset{}
			}
			add[k.topic][k.part] = kgo.NewOffset().AtStart()
			n++
			if why != "" {
				s.log.Info(why, "topic", k.topic, "partition", k.part, "end_offset", end)
			}
		}
		s.mu.Unlock()
		cl.AddConsumePartitions(add)
		return n
	}
	starts, ends, err := listOffsets(ctx, cfg.Kafka, topics)
	if err != nil {
		return fmt.Errorf("read model %s: %w", liveModel.Name, err)
	}
	takeIn(ends, starts, "")
	start := time.Now()
	swapAttempts := 0
	lockCheckEvery, lockChecked := rebuildLockCheckInterval, time.Now()
	if cfg.rebuildLockCheckEvery > 0 {
		lockCheckEvery = cfg.rebuildLockCheckEvery
	}
	// The next batch is polled and decoded while the store writes the
	// current one (pollAhead): ahead is that batch in flight, next one
	// received but not applied yet (a stopped poll's).
	var ahead <-chan *decodedBatch
	var stopAhead context.CancelFunc
	var next *decodedBatch
	// The batch decoded ahead is decoded with actx, cancelled on the way
	// out: an error exit does not wait for its decode, which a registry
	// that does not answer holds up to its timeout; its goroutine still
	// ends before Rebuild returns.
	actx, cancelAhead := context.WithCancel(ctx)
	defer func() {
		cancelAhead()
		if ahead != nil {
			stopAhead()
			<-ahead
		}
	}()
	for {
		behind := false
		for k, next := range s.expectedCopy() {
			if max(next, 0) < target[k] {
				behind = true
			}
		}
		if !behind && ahead != nil {
			// Caught up: no record may come, so the poll in flight stops;
			// what it returned is applied if the rebuild goes on.
			stopAhead()
			next, ahead = <-ahead, nil
		}
		if !behind {
			// A partition added to a source topic since the last listing
			// holds records (state, in a compacted topic) the rebuilt table
			// must have before it is swapped in.
			starts, ends, err := listOffsets(ctx, cfg.Kafka, topics)
			if err != nil {
				return fmt.Errorf("read model %s: %w", liveModel.Name, err)
			}
			if takeIn(ends, starts, "a partition was added to a source topic during the rebuild; reading it from its start") > 0 {
				continue
			}
			// Every partition is at or past the live positions: swap, unless
			// the running sink moved on meanwhile (then catch up again), or
			// the lock was lost (it may be another rebuild's now, building
			// or about to drop the same shadow table): the swap commits
			// only while the lock is this rebuild's (rebuildlock.go).
			live, done, err := s.trySwap(ctx, liveModel, lock)
			if err != nil && isTransient(err) && swapAttempts < maxTransientAttempts {
				// Lock contention with a running sink's batch: try again.
				swapAttempts++
				s.log.Info("the swap met a running batch's locks; retrying", "attempt", swapAttempts, "error", err)
				continue
			}
			if err != nil {
				return err
			}
			if done {
				if progress != nil {
					// Compaction's gaps leave Done short of Total: the
					// rebuild is whole all the same.
					n := s.records.Load()
					progress(Progress{Done: n, Total: n, Elapsed: time.Since(start), Swapped: true})
				}
				return nil
			}
			// The live read model may already read a partition added
			// after the listing above.
			takeIn(live, nil, "a partition was added to a source topic during the rebuild; reading it from its start")
			for k, l := range live {
				if l > target[k] {
					total += l - target[k] // records the running sink applied meanwhile
					target[k] = l
				}
			}
			continue
		}
		var b *decodedBatch
		switch {
		case next != nil:
			b, next = next, nil
		case ahead != nil:
			b, ahead = <-ahead, nil
			stopAhead()
		default:
			fetches := cl.PollRecords(ctx, s.cfg.MaxBatch)
			fetches.EachError(func(t string, p int32, err error) {
				s.log.Warn("fetch failed; retrying", "topic", t, "partition", p, "error", err)
			})
			b = &decodedBatch{recs: fetches.Records()}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(lockChecked) >= lockCheckEvery {
			if err := lock.stillHeld(ctx); err != nil {
				return err
			}
			lockChecked = time.Now()
		}
		ahead, stopAhead = s.pollAhead(actx, cl)
		fenced := s.fenced.Load()
		if err := s.processRetrying(ctx, b); err != nil {
			return fmt.Errorf("read model %s: rebuild: %w", liveModel.Name, err)
		}
		if s.fenced.Load() != fenced {
			// The offsets were reloaded and the consumer moved back to
			// them: the batch polled ahead follows the one that was
			// rolled back, and applying it would skip that one.
			stopAhead()
			<-ahead
			ahead = nil
		}
		if progress != nil {
			done := s.records.Load()
			progress(Progress{Done: done, Total: max(total, done), Elapsed: time.Since(start)}) // catching up adds records
		}
	}
}

// ofSources keeps the offsets of the read model's source topics: the live
// read model may have stored some of a topic it no longer reads (a source
// removed from the config), which the swap drops and nothing catches up
// to.
func (s *Sink) ofSources(offsets map[tp]int64) map[tp]int64 {
	out := map[tp]int64{}
	for k, o := range offsets {
		if s.a.sourceOf(k.topic) >= 0 {
			out[k] = o
		}
	}
	return out
}

// listOffsets lists the log start and end offsets of every partition of
// topics, with a client of its own: a client's cached metadata (kadm's,
// up to MetadataMinAge old) would not show a partition added just now.
func listOffsets(ctx context.Context, opts []kgo.Opt, topics []string) (starts, ends map[tp]int64, err error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets: kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, ends = map[tp]int64{}, map[tp]int64{}
	for _, t := range topics {
		// A start may pass the end listed before it (records produced
		// and deleted in between): takeIn counts such a partition as
		// empty.
		e, err := broker.EndOffsets(ctx, adm, t)
		if err != nil {
			return nil, nil, err
		}
		st, err := broker.StartOffsets(ctx, adm, t)
		if err != nil {
			return nil, nil, err
		}
		for p, end := range e {
			ends[tp{t, p}] = end
			starts[tp{t, p}] = st[p]
		}
	}
	return starts, ends, nil
}

// prepareRebuild is prepare for the shadow table: anything left by an
// earlier, interrupted rebuild is removed first, after finishing its swap
// if it stopped in the middle of one (MySQL: its rebuilt table is then
// the shadow table, and the live offsets already point into it).
func (s *Sink) prepareRebuild(ctx context.Context, live ReadModel) error {
	db, d, err := openStore(s.cfg.StoreURL)
	if err != nil {
		return fmt.Errorf("read model %s: store: %w", s.name, err)
	}
	st := &store{db: db, d: d}
	if err := ping(ctx, db); err != nil {
		db.Close()
		return fmt.Errorf("read model %s: store %s does not answer: %w", s.name, d.name(), err)
	}
	if err := st.ensureSinkTables(ctx); err != nil {
		db.Close()
		return fmt.Errorf("read model %s: %w", s.name, err)
	}
	if _, ok := d.(mysqlDialect); ok {
		if err := st.finishSwap(ctx, live.Name, live.Table); err != nil {
			db.Close()
			return fmt.Errorf("read model %s: %w", live.Name, err)
		}
	}
	if err := st.forget(ctx, s.cfg.Model.Name, s.cfg.Model.Table); err != nil {
		db.Close()
		return fmt.Errorf("read model %s: %w", s.name, err)
	}
	db.Close()
	return s.prepare(ctx)
}

// forget drops a table and deletes a read model's offsets and side rows.
func (s *store) forget(ctx context.Context, model, table string) error {
	p := s.d.param
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + s.d.quote(table),
		fmt.Sprintf("DELETE FROM %s WHERE read_model = %s", s.d.quote(offsetsTable), p(1)),
		fmt.Sprintf("DELETE FROM %s WHERE read_model = %s", s.d.quote(sideTable), p(1)),
	} {
		var args []any
		if q[0] == 'D' && q[1] == 'E' {
			args = []any{model}
		}
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("remove an earlier rebuild: %w", err)
		}
	}
	return nil
}

// trySwap makes the rebuilt table and its positions the read model's, in
// one transaction that first locks the live read model's offsets: if one
// is past the rebuild's (a running sink applied more meanwhile), nothing
// changes and the live offsets are returned to catch up to. Otherwise
// every partition of the rebuild is at or past the live position, so a
// running sink either continues where it is (same position) or, having
// records past its position, finds the offsets moved on its next batch and
// reloads them. The transaction runs on the rebuild lock's session and
// checks the lock first (lock.beginSwap): it commits only while the lock
// is this rebuild's, and fails with the lock-lost error otherwise.
func (s *Sink) trySwap(ctx context.Context, live ReadModel, lock *rebuildLock) (_ map[tp]int64, _ bool, err error) {
	if _, ok := s.st.d.(mysqlDialect); ok {
		return s.trySwapMySQL(ctx, live, lock)
	}
	st, q, p := s.st, s.st.d.quote, s.st.d.param
	old := live.Table + oldSuffix
	have, err := st.d.columns(ctx, st.db, live.Table)
	if err != nil {
		return nil, false, fmt.Errorf("swap: %w", err)
	}
	// Deferred before the rollback, so run after it: lostOr queries the
	// lock's session, which the transaction must have left.
	committing := false
	defer func() { err = lock.lostOr(ctx, err, committing) }()
	tx, err := lock.beginSwap(ctx, st.db)
	if err != nil {
		return nil, false, fmt.Errorf("swap: %w", err)
	}
	defer tx.Rollback()
	forUpdate := ""
	if _, ok := st.d.(postgresDialect); ok {
		forUpdate = " FOR UPDATE" // SQLite's transactions take the write lock at BEGIN
		// A running sink's batch locks the side table, then the read
		// model's table, then its offsets rows: take them in the same
		// order, or the swap and a batch can each hold what the other
		// waits for (a deadlock the swap would lose).
		tables := q(sideTable)
		if have != nil {
			tables += ", " + q(live.Table)
		}
		if _, err := tx.ExecContext(ctx, "LOCK TABLE "+tables+" IN EXCLUSIVE MODE"); err != nil {
			return nil, false, fmt.Errorf("swap: lock the live tables: %w", err)
		}
	}
	liveOffsets, err := queryOffsets(ctx, tx, fmt.Sprintf("SELECT topic, part, next_offset FROM %s WHERE read_model = %s%s", q(offsetsTable), p(1), forUpdate), live.Name)
	if err != nil {
		return nil, false, fmt.Errorf("swap: read the live offsets: %w", err)
	}
	mine := s.expectedCopy()
	ahead := false
	for k, l := range s.ofSources(liveOffsets) {
		if l > max(mine[k], 0) {
			ahead = true
		}
	}
	if ahead {
		return s.ofSources(liveOffsets), false, nil
	}
	var stmts []string
	if have != nil {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s RENAME TO %s", q(live.Table), q(old)))
	}
	stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s RENAME TO %s", q(s.cfg.Model.Table), q(live.Table)))
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return nil, false, fmt.Errorf("swap: %s: %w", stmt, err)
		}
	}
	if have != nil {
		if err := st.moveOwnedSequences(ctx, tx, old, live.Table); err != nil {
			return nil, false, fmt.Errorf("swap: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DROP TABLE "+q(old)); err != nil {
			return nil, false, fmt.Errorf("swap: DROP TABLE %s: %w", q(old), err)
		}
	}
	for _, t := range []string{offsetsTable, sideTable} {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE read_model = %s", q(t), p(1)), live.Name); err != nil {
			return nil, false, fmt.Errorf("swap: %w", err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET read_model = %s WHERE read_model = %s", q(t), p(1), p(2)), live.Name, s.cfg.Model.Name); err != nil {
			return nil, false, fmt.Errorf("swap: %w", err)
		}
	}
	if hook := s.cfg.beforeSwapCommit; hook != nil {
		hook(ctx)
	}
	committing = true
	if err := tx.Commit(); err != nil {
		return nil, false, fmt.Errorf("swap: %w", err)
	}
	return nil, true, nil
}

// moveOwnedSequences gives the sequences owned by columns of table from
// (PostgreSQL: a serial column's, ALTER SEQUENCE … OWNED BY) to the same
// columns of table to. The rebuilt table was created LIKE the live one, so
// its column's default draws from the live column's sequence: owned by the
// old table, the sequence would make the old table's drop fail (the new
// default depends on it), or be dropped with it. Moved, numbering goes on.
// An identity column's sequence is not shared (LIKE makes the new table
// its own).
func (s *store) moveOwnedSequences(ctx context.Context, tx *sql.Tx, from, to string) error {
	if _, ok := s.d.(postgresDialect); !ok {
		return nil
	}
	stmts, err := queryColumns(ctx, tx, `SELECT format('ALTER SEQUENCE %s OWNED BY %s.%s', q.oid::regclass::text, $2::text, quote_ident(a.attname))
		FROM pg_depend d JOIN pg_class q ON q.oid = d.objid AND q.relkind = 'S'
			JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
			AND d.refobjid = to_regclass($1) ORDER BY 1`, s.d.quote(from), s.d.quote(to))
	if err != nil {
		return fmt.Errorf("look up the sequences owned by table %s: %w", s.d.quote(from), err)
	}
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("give a sequence of table %s to the rebuilt table: %s: %w", s.d.quote(from), stmt, err)
		}
	}
	return nil
}

// queryOffsets runs query, which selects topic, part and next_offset rows,
// and returns them by partition.
func queryOffsets(ctx context.Context, tx *sql.Tx, query string, args ...any) (map[tp]int64, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[tp]int64{}
	for rows.Next() {
		var k tp
		var n int64
		if err := rows.Scan(&k.topic, &k.part, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}
