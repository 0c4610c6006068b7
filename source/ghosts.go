package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/relation"
)

// Redoing an interrupted snapshot from a new consistent point leaves one
// hole if nothing else is done: a row published by the interrupted run (or
// streamed before the snapshot state was lost) and deleted before the new
// consistent point is in neither the new snapshot nor the new stream, so
// its stale record would stay on the topic for good.
//
// So the old slot is not simply dropped: it is first copied to a "previous"
// slot (pg_copy_logical_replication_slot, same position), the main slot is
// recreated with a new exported snapshot, and before that snapshot is read
// the previous slot is streamed from its position up to the new consistent
// point, turning every DELETE (and the old key of every key-changing
// UPDATE) of a configured table into a tombstone. Only then is it dropped.
// A tombstone for a key that exists at the new consistent point is
// harmless: the new snapshot's record for it follows. Crash-safe: a
// previous slot left behind by an interrupted restart is older than the
// main slot and is kept and replayed instead of a new copy.

// prevSlotName is the slot holding the position of an abandoned snapshot.
func prevSlotName(slot string) string {
	const suffix = "_prev"
	if len(slot)+len(suffix) > 63 {
		slot = slot[:63-len(suffix)]
	}
	return slot + suffix
}

// keepPrevSlot makes sure a previous slot exists at (or before) the main
// slot's position, before the main slot is dropped.
func (s *Source) keepPrevSlot(ctx context.Context, conn *pgx.Conn) error {
	prev := prevSlotName(s.cfg.Slot)
	info, err := lookupSlot(ctx, conn, prev)
	if err != nil {
		return err
	}
	if info.exists {
		return nil // left by an interrupted restart: it is the older one
	}
	if _, err := conn.Exec(ctx, `SELECT pg_copy_logical_replication_slot($1, $2)`, s.cfg.Slot, prev); err != nil {
		return fmt.Errorf("copy replication slot %s to %s (to tombstone rows deleted while the snapshot is redone): %w", s.cfg.Slot, prev, err)
	}
	return nil
}

// replayDeletes streams the previous slot, if there is one, up to until,
// hands a delete to h for every row deleted in it (and every old key of an
// update that changed the key), waits until all are acknowledged, and
// drops the slot. The main replication connection must stay idle
// meanwhile (its exported snapshot is in use), so this uses its own.
func (s *Source) replayDeletes(ctx context.Context, conn *pgx.Conn, until pglogrepl.LSN, h Handler) error {
	prev := prevSlotName(s.cfg.Slot)
	info, err := lookupSlot(ctx, conn, prev)
	if err != nil || !info.exists {
		return err
	}
	repl, err := connectReplication(ctx, s.cfg.URL)
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	r := &deleteReplay{src: s, h: h, cp: newCheckpoint(0), until: until}
	// Status updates ask for keepalives and confirm nothing, so a crash
	// here replays from the same position.
	r.r = newWALReader(repl, prev, r, maxReceiveWait, nil)
	if err := r.r.start(ctx, s.cfg.Publication, info.confirmed); err != nil {
		return err
	}
	r.r.nextStatus = time.Time{} // ask for a keepalive at once: there may be nothing to read
	s.log.Info("tombstoning rows deleted since the interrupted snapshot's position", "slot", prev,
		"from_lsn", info.confirmed, "to_lsn", until)
	r.mark = r.cp.begin()
	if err := r.r.run(ctx); err != nil {
		return fmt.Errorf("tombstone rows deleted since slot %s's position %s: %w", prev, info.confirmed, err)
	}
	r.cp.seal(r.mark, until)
	if err := h.Flush(ctx); err != nil {
		return fmt.Errorf("wait for tombstone acknowledgements: %w", err)
	}
	if r.cp.advance() != until {
		return fmt.Errorf("tombstones: %d flushed but not acknowledged", r.mark.pending.Load())
	}
	// The replay connection holds the slot until it is closed.
	repl.Close(ctx)
	if err := s.dropSlotSQL(ctx, conn, prev); err != nil {
		return err
	}
	s.log.Info("tombstoned rows deleted while the snapshot was interrupted", "slot", prev,
		"from_lsn", info.confirmed, "to_lsn", until, "tombstones", r.n, "truncations", r.truncated)
	return nil
}

// dropSlotSQL drops a slot from an SQL connection, waiting for its last
// user to let go of it.
func (s *Source) dropSlotSQL(ctx context.Context, conn *pgx.Conn, name string) error {
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	for {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		// 55006: still active, released a moment after its connection ends.
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return fmt.Errorf("drop replication slot %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // poll until released
		}
	}
}

// deleteReplay is the walHandler of the delete replay: it reads until
// the walsender has sent everything before until (a transaction committed
// at or after it, or a keepalive past it outside a transaction), and turns
// deletes into tombstones. Every tombstone belongs to one mark, sealed at
// until once reading ends.
type deleteReplay struct {
	src   *Source
	h     Handler
	r     walReader
	until pglogrepl.LSN
	cp    *checkpoint
	mark  *txnMark
	n     int64 // deletes handed over
	// truncated counts the TRUNCATEs of configured tables handed over
	// (each tombstones what its topic holds).
	truncated int64
	change    Change
}

func (r *deleteReplay) begin() error { return nil }

func (r *deleteReplay) commit(_ context.Context, commitLSN, _ pglogrepl.LSN) error {
	if commitLSN >= r.until {
		return errStopReading
	}
	return nil
}

func (r *deleteReplay) keepalive(serverEnd pglogrepl.LSN) error {
	if !r.r.txn.open && serverEnd >= r.until {
		return errStopReading
	}
	return nil
}

func (r *deleteReplay) status() pglogrepl.StandbyStatusUpdate {
	return pglogrepl.StandbyStatusUpdate{ReplyRequested: true}
}

func (r *deleteReplay) statusSent(pglogrepl.StandbyStatusUpdate) {}

func (r *deleteReplay) message(context.Context, *pglogrepl.LogicalDecodingMessage) error { return nil }

// row tombstones the old key of a DELETE, and of an UPDATE that sent one
// (when the key changed).
func (r *deleteReplay) row(ctx context.Context, op Op, rel *walRel, oldTuple, newTuple *pglogrepl.TupleData) error {
	switch op {
	case OpDelete:
		return r.tombstone(ctx, rel, oldTuple, nil)
	case OpUpdate:
		if oldTuple != nil {
			return r.tombstone(ctx, rel, oldTuple, newTuple)
		}
	}
	return nil
}

// relation maps a relation of the replayed stream to its configured
// table, and each table column to its position in the tuples of the shape
// the WAL had then, which may differ from the table's shape now (columns
// added, dropped or renamed since): columns are matched by name, and a key
// column by its place among the WAL's key columns when it was renamed
// since (see renamedKeys).
func (r *deleteReplay) relation(_ context.Context, m *pglogrepl.RelationMessage) (*walRel, error) {
	idx, ok := r.src.tableIndex(m, r.r.txn.lsn)
	if !ok {
		return &walRel{idx: -1}, nil
	}
	t := &r.src.tables[idx]
	rel := &walRel{idx: idx, table: t, at: make([]int, len(t.Columns))}
	for i := range t.Columns {
		rel.at[i] = slices.IndexFunc(m.Columns, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == t.Columns[i].Name })
	}
	renamedKeys(m, t, rel.at)
	return rel, nil
}

// renamedKeys maps each key column of t that the WAL's shape m lacks by
// name to the WAL key column in the same place among m's key columns (the
// replica identity, flagged in the RELATION message), when that column
// has the same type and no longer exists by its old name: the key column
// was renamed since. A key's bytes do not depend on its column's name, so
// the tombstone names the records the interrupted run published. Were the
// guess wrong (the key moved to a new column of the same type), the
// tombstone would name some other key: harmless, as the new snapshot's
// record for a live key follows it.
func renamedKeys(m *pglogrepl.RelationMessage, t *relation.Table, at []int) {
	var walKey []int
	for j, c := range m.Columns {
		if c.Flags&1 != 0 {
			walKey = append(walKey, j)
		}
	}
	if len(walKey) != len(t.PrimaryKey) {
		return
	}
	for n, k := range t.PrimaryKey {
		_, i, found := t.Column(k)
		if !found || at[i] >= 0 {
			continue
		}
		wc := m.Columns[walKey[n]]
		if _, _, still := t.Column(wc.Name); still || wc.DataType != t.Columns[i].Type.OID {
			continue
		}
		at[i] = walKey[n]
	}
}

// replayText is the value of table column i in tuple as rel maps it, if
// the tuple has one.
func replayText(rel *walRel, tuple *pglogrepl.TupleData, i int) ([]byte, bool) {
	at := rel.at[i]
	if at < 0 || at >= len(tuple.Columns) || tuple.Columns[at].DataType != pglogrepl.TupleDataTypeText {
		return nil, false
	}
	return tuple.Columns[at].Data, true
}

// truncate hands a TRUNCATE of a configured table to the handler, which
// tombstones every key live on its topic: rows the interrupted run
// published and the TRUNCATE removed are in neither the new snapshot nor
// the new stream. The new snapshot's records follow the tombstones.
func (r *deleteReplay) truncate(ctx context.Context, rel *walRel) error {
	r.change = r.r.change(OpTruncate, rel)
	if err := handOverTruncate(ctx, r.h, &r.change, r.cp, r.mark); err != nil {
		return err
	}
	r.truncated++
	return nil
}

// tombstone hands a delete of the old tuple's key to the handler; for an
// update only when the primary key changed.
func (r *deleteReplay) tombstone(ctx context.Context, rel *walRel, oldTuple, newTuple *pglogrepl.TupleData) error {
	t := rel.table
	// Columns are taken by name from the WAL's shape and decoded as the
	// table has them now: a row deleted before a column was added or
	// dropped still gets its tombstone.
	for _, k := range t.PrimaryKey {
		_, i, found := t.Column(k)
		if !found {
			return fmt.Errorf("table %s: primary key column %s is not one of its columns", t.QualifiedName(), k)
		}
		if _, ok := replayText(rel, oldTuple, i); !ok {
			// The key then was not the key now (changed since, not a
			// rename): its records were keyed otherwise and cannot be
			// named.
			r.src.log.Warn("a row deleted while the snapshot was interrupted lacks today's key column: no tombstone for it",
				"table", t.QualifiedName(), "column", k, "lsn", r.r.txn.lsn)
			return nil
		}
	}
	if newTuple != nil {
		same := true
		for _, k := range t.PrimaryKey {
			_, i, _ := t.Column(k) // found: checked above
			o, _ := replayText(rel, oldTuple, i)
			n, _ := replayText(rel, newTuple, i)
			same = same && bytes.Equal(o, n)
		}
		if same {
			return nil
		}
	}
	old := make([]any, len(t.Columns))
	for i := range t.Columns {
		text, ok := replayText(rel, oldTuple, i)
		if !ok || t.Columns[i].Unused {
			continue
		}
		v, err := relation.DecodeText(&t.Columns[i].Type, text)
		if err != nil {
			if !slices.Contains(t.PrimaryKey, t.Columns[i].Name) {
				// A column whose type changed since: a tombstone needs
				// only the key, and failing here would fail every start.
				continue
			}
			return valueError(t, tupleKeyByName(rel, oldTuple), i, err)
		}
		old[i] = v
	}
	r.change = r.r.change(OpDelete, rel)
	r.change.Old = old
	r.change.Ack = r.cp.track(r.mark)
	if err := r.h.Handle(ctx, &r.change); err != nil {
		return err
	}
	r.n++
	return nil
}

// tupleKeyByName renders the primary key of a replayed tuple for an error.
func tupleKeyByName(rel *walRel, tuple *pglogrepl.TupleData) string {
	return rowKey(rel.table, func(i int) ([]byte, bool) { return replayText(rel, tuple, i) })
}
