package source

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// Op is what happened to a row.
type Op uint8

const (
	OpInsert   Op = iota + 1 // INSERT in the WAL
	OpUpdate                 // UPDATE in the WAL
	OpDelete                 // DELETE in the WAL
	OpSnapshot               // row read by the initial snapshot
	OpTruncate               // TRUNCATE of the whole table (see truncater)
)

// String is the one-letter code used in record headers (Debezium's
// convention: c, u, d, r).
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "c"
	case OpUpdate:
		return "u"
	case OpDelete:
		return "d"
	case OpSnapshot:
		return "r"
	case OpTruncate:
		return "t"
	default:
		return "?"
	}
}

// verb names the operation in messages.
func (o Op) verb() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpSnapshot:
		return "snapshot read"
	case OpTruncate:
		return "truncate"
	default:
		return "change"
	}
}

// Change is one row event. The source reuses Change values: a handler must
// not keep the pointer after Handle returns, only the values it copied and
// the [Ack].
type Change struct {
	Op Op
	// Table is the configured table the row belongs to, shaped as the row
	// is (columns in attribute order).
	Table *relation.Table
	// TableIndex is the position of Table in the tables given to [New].
	TableIndex int
	// New is the row after the change (insert, update, snapshot); nil for
	// a delete, and for a row given as Text. Values follow relation.Kind's
	// documentation.
	New []any
	// Text is the row after the change as PostgreSQL's text output, in
	// place of New: one value per column, as relation.DecodeText reads it,
	// nil for NULL and for unused columns. The snapshot hands its rows over
	// this way, so that the handler encodes them without boxing every value
	// (mapping.Entity.AppendValueText). Text and its values are only valid
	// during Handle; [Change.Values] decodes them.
	Text [][]byte
	// Old is the old tuple PostgreSQL sent: for a delete, and for an
	// update that changed the replica identity (or any update under
	// REPLICA IDENTITY FULL); nil otherwise. Columns outside the replica
	// identity are nil.
	Old []any
	// LSN is the commit LSN of the transaction (the consistent point for
	// snapshot rows); CommitTime and XID identify the transaction.
	LSN        pglogrepl.LSN
	CommitTime time.Time
	XID        uint32
	// Republish is the id of the republish request an OpSnapshot row was
	// read for; empty for the initial snapshot and every stream change.
	Republish string
	// Ack must be called exactly once, when every record made from this
	// change is durable in Kafka.
	Ack Ack
}

// Values returns the row after the change as Go values: New, or Text
// decoded. A value that cannot be decoded is an error naming the table,
// the row's key and the column ([Change.ValueError]).
func (c *Change) Values() ([]any, error) {
	if c.Text == nil {
		return c.New, nil
	}
	row, err := decodeRow(c.Table, c.Text)
	if err != nil {
		return nil, fmt.Errorf("%s at LSN %s: %w", c.Op.verb(), c.LSN, err)
	}
	return row, nil
}

// ValueError reports that column col of Text could not be decoded or
// encoded because of err: it names the change, the table, the row's key
// and the column, and says how to carry the value where there is a way
// (the message a refused value stops the source with).
func (c *Change) ValueError(col int, err error) error {
	key := rowKey(c.Table, func(k int) ([]byte, bool) { return c.Text[k], c.Text[k] != nil })
	return fmt.Errorf("%s at LSN %s: %w", c.Op.verb(), c.LSN, valueError(c.Table, key, col, err))
}

// Ack is the receipt of one change. The zero Ack is a no-op.
type Ack struct{ m *txnMark }

// Done records that the change is durable. Safe for concurrent use.
func (a Ack) Done() {
	if a.m != nil {
		a.m.pending.Add(-1)
	}
}

// txnMark is one transaction in flight: how many of its changes are not yet
// acknowledged, and, once its COMMIT was read, the LSN to confirm.
type txnMark struct {
	pending atomic.Int64
	end     pglogrepl.LSN // written before sealed is set
	commit  int64         // UnixNano commit time from BEGIN, for Stats; 0 for a snapshot
	sealed  atomic.Bool
}
