package source

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// shapeFollower is a [Handler] that can follow a configured table's shape
// changing while streaming (ALTER TABLE ADD, DROP, RENAME or ALTER TYPE of
// a column). The source checks for it with a type assertion; without it, a
// shape change stops the stream.
type shapeFollower interface {
	// FollowShape is called on the stream goroutine before any row of
	// table idx in shape next is handed over. prev is the shape rows were
	// decoded with until now; at a session's first RELATION of the table
	// prev may equal next, so that a handler that followed a change in an
	// earlier session realigns with a stream that replays older rows.
	// lsn is the commit LSN of the transaction that carries the new shape.
	//
	// It returns the table to decode rows with from now on (next with the
	// handler's per-column overrides applied), or an error: the stream then
	// stops before any row in the new shape is handed over, and the
	// transaction is never confirmed, so a restart meets the change again.
	FollowShape(ctx context.Context, idx int, prev, next *relation.Table, lsn pglogrepl.LSN) (*relation.Table, error)
}

// truncater is a [Handler] that can publish a TRUNCATE. Without it, a
// TRUNCATE of a configured table stops the stream.
type truncater interface {
	// Truncate is called on the stream goroutine for a TRUNCATE of a
	// configured table, in commit order with the row changes around it. c
	// has Op [OpTruncate], the table, the transaction and an Ack to call
	// once everything the TRUNCATE produced is durable; New and Old are nil.
	Truncate(ctx context.Context, c *Change) error
}

// relation maps a RELATION message to a configured table. pgoutput sends
// one before the first row of a relation in each session and again after
// the relation changed, so a message whose columns differ from the shape in
// use announces an ALTER TABLE, effective from this transaction on.
func (st *stream) relation(ctx context.Context, m *pglogrepl.RelationMessage) (*walRel, error) {
	// Rows held for a re-read were decoded in the shape before this one:
	// the handler gets them before it follows the change, and the catalog
	// is read on the SQL connection the pipeline re-reads on.
	if err := st.drain(ctx); err != nil {
		return nil, err
	}
	idx, ok := st.src.tableIndex(m, st.r.txn.lsn)
	if !ok {
		return &walRel{idx: -1}, nil
	}
	if st.shapes == nil {
		st.shapes = map[int]*relation.Table{}
	}
	prev, seen := st.shapes[idx]
	if !seen {
		prev = &st.src.tables[idx]
	}
	next := prev
	if !sameShape(m, prev) {
		t, err := st.shapeFromRelation(ctx, m, prev)
		if err != nil {
			return nil, err
		}
		next = &t
	}
	f, follows := st.h.(shapeFollower)
	switch {
	case next == prev && (seen || !follows):
		st.shapes[idx] = prev
		return &walRel{idx: idx, table: prev}, nil
	case !follows:
		return nil, fmt.Errorf("table %s changed while streaming (columns were [%s], WAL now has [%s]): the handler cannot follow schema changes; restart replicator after the change is complete",
			prev.QualifiedName(), columnNames(prev), columnNames(next))
	}
	t, err := f.FollowShape(ctx, idx, prev, next, st.r.txn.lsn)
	if err != nil {
		return nil, err
	}
	if next != prev {
		st.src.log.Info("table shape changed", "table", t.QualifiedName(), "lsn", st.r.txn.lsn,
			"columns_were", columnNames(prev), "columns_now", columnNames(t))
	}
	st.shapes[idx] = t
	return &walRel{idx: idx, table: t}, nil
}

// tableIndex maps a RELATION message to the index of a configured table:
// by its name, as configured, or else by its OID. The publication lists
// tables by OID, so a configured table renamed while streaming keeps
// sending its changes under the new name; and WAL written before a rename
// names the table as it was then, replayed after the configuration was
// changed to the new name. Either way it is the same table and its changes
// go to the same entity: dropping them would confirm the slot past them.
// lsn is the commit LSN of the transaction, for the warning.
func (s *Source) tableIndex(m *pglogrepl.RelationMessage, lsn pglogrepl.LSN) (int, bool) {
	name := m.Namespace + "." + m.RelationName
	if idx, ok := s.byName[name]; ok {
		return idx, true
	}
	idx, ok := s.byOID[m.RelationID]
	if !ok {
		return -1, false
	}
	s.warnRenamed(idx, m.RelationID, name, lsn)
	return idx, true
}

// renamedName is a configured table's OID with a name the WAL gave it.
type renamedName struct {
	oid  uint32
	name string
}

// warnRenamed logs, once per OID and WAL name for the life of the Source
// (not per RELATION message, which each session repeats), that configured
// table idx goes by name in the WAL, and what to do about it.
func (s *Source) warnRenamed(idx int, oid uint32, name string, lsn pglogrepl.LSN) {
	s.renamedMu.Lock()
	defer s.renamedMu.Unlock()
	key := renamedName{oid: oid, name: name}
	if s.renamedSeen[key] {
		return
	}
	if s.renamedSeen == nil {
		s.renamedSeen = map[renamedName]bool{}
	}
	s.renamedSeen[key] = true
	t := &s.tables[idx]
	s.log.Warn(LogTableRenamed, "table", t.QualifiedName(), "wal_name", name, "oid", oid, "lsn", lsn,
		"fix", fmt.Sprintf("if %s is its name now, set `table: %s` in entities "+
			"(keep `name:`/`topic:` so the entity stays the same: `name: %s` if it was left to default to the table's name) before the next restart: a start looks tables up by name",
			name, name, t.Name))
}

// LogTableRenamed is the message of the warning that a configured table
// goes by another name in the WAL (see [Source.tableIndex]).
const LogTableRenamed = "configured table has another name in the WAL (renamed): its changes go to its entity, found by OID"

// sameShape reports whether m describes the columns t decodes: same names,
// type OIDs and, for numeric columns, precision and scale (their Avro
// decimal depends on them; other typmods such as varchar's length do not
// change the decoded value).
func sameShape(m *pglogrepl.RelationMessage, t *relation.Table) bool {
	if len(m.Columns) != len(t.Columns) {
		return false
	}
	for i, mc := range m.Columns {
		c := &t.Columns[i]
		if mc.Name != c.Name || mc.DataType != c.Type.OID {
			return false
		}
		if c.Type.Kind == relation.Numeric {
			if p, s := numericTypmod(mc.TypeModifier); p != c.Type.Precision || s != c.Type.Scale {
				return false
			}
		}
	}
	return true
}

// shapeFromRelation builds the table as m describes it. The message is the
// truth for this point of the WAL: names, type OIDs and typmods. The
// catalog is only asked what a type OID is (enum, domain, array), which
// does not change while the OID exists; it may already be ahead of the
// stream in everything else, so nothing else is read from it. A column kept
// by name and type keeps its definition (nullability, overrides). A column
// new to the stream is nullable: its Avro field must have the default null
// for readers of older records, and PostgreSQL's NOT NULL at this point of
// the WAL cannot be known. The key and replica identity are kept; a key
// column that disappeared is the handler's to refuse.
func (st *stream) shapeFromRelation(ctx context.Context, m *pglogrepl.RelationMessage, prev *relation.Table) (relation.Table, error) {
	t := relation.Table{Schema: prev.Schema, Name: prev.Name, OID: prev.OID, PrimaryKey: prev.PrimaryKey, IdentityFull: prev.IdentityFull}
	for _, name := range prev.Identity {
		for _, mc := range m.Columns {
			if mc.Name == name {
				t.Identity = append(t.Identity, name)
			}
		}
	}
	types := newTypeResolver(st.sql)
	for _, mc := range m.Columns {
		old, _, had := prev.Column(mc.Name)
		if had && old.Type.OID == mc.DataType {
			if p, s := numericTypmod(mc.TypeModifier); old.Type.Kind != relation.Numeric || (p == old.Type.Precision && s == old.Type.Scale) {
				t.Columns = append(t.Columns, old)
				continue
			}
		}
		typ, err := types.resolve(ctx, mc.DataType, mc.TypeModifier)
		if err != nil {
			return t, fmt.Errorf("table %s column %s after a schema change: %w", prev.QualifiedName(), mc.Name, err)
		}
		if err := st.sql.QueryRow(ctx, `SELECT format_type($1::oid, $2::int)`, mc.DataType, mc.TypeModifier).Scan(&typ.Name); err != nil {
			return t, fmt.Errorf("table %s column %s after a schema change: name type %d: %w", prev.QualifiedName(), mc.Name, mc.DataType, err)
		}
		t.Columns = append(t.Columns, relation.Column{Name: mc.Name, Type: typ, Nullable: !had || old.Nullable})
	}
	return t, nil
}

// numericTypmod decodes a numeric column's typmod into precision and scale;
// both zero when unconstrained. The scale is an 11-bit signed value since
// PostgreSQL 15.
func numericTypmod(typmod int32) (precision, scale int) {
	if typmod < 4 {
		return 0, 0
	}
	return int((typmod - 4) >> 16 & 0xffff), int(int16((typmod-4)&0x7ff<<5) >> 5)
}

func columnNames(t *relation.Table) string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// truncate hands a TRUNCATE of a configured table to the handler, so it
// can tombstone what the topic still holds.
func (st *stream) truncate(ctx context.Context, rel *walRel) error {
	st.txnRows = true
	for _, w := range st.windows() {
		if w.table == rel.idx {
			w.truncated = true // every row read before it may be gone
		}
	}
	if err := st.drain(ctx); err != nil {
		return err
	}
	c := &st.change
	*c = st.r.change(OpTruncate, rel)
	return handOverTruncate(ctx, st.h, c, st.cp, st.txn)
}

// handOverTruncate hands c, a TRUNCATE of one configured table in the
// transaction m, to h. A handler that cannot publish one stops the source.
func handOverTruncate(ctx context.Context, h Handler, c *Change, cp *checkpoint, m *txnMark) error {
	tr, ok := h.(truncater)
	if !ok {
		return fmt.Errorf("TRUNCATE of %s at LSN %s: the handler cannot publish a truncation; the replicator stops rather than leave deleted rows on the topic (see docs/OPERATIONS.md)", c.Table.QualifiedName(), c.LSN)
	}
	c.Ack = cp.track(m)
	return tr.Truncate(ctx, c)
}
