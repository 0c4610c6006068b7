package source

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// rowParser parses pgoutput's row messages (INSERT, UPDATE, DELETE) into
// tuples it reuses from one message to the next. pglogrepl.Parse allocates
// a message, a tuple, a column struct and a copy of every column's bytes
// per row, and copies those bytes one at a time: the largest cost of the
// receive loop in the stream profile (docs/BENCHMARKS.md, "What the profiles showed"). Here a
// column's Data aliases the message, so it is valid only until the next
// message is received: decodeTuple copies what it keeps.
type rowParser struct {
	old, new tupleBuf
}

// tupleBuf is a pglogrepl.TupleData whose column structs are reused.
type tupleBuf struct {
	td   pglogrepl.TupleData
	cols []pglogrepl.TupleDataColumn // backing array of td.Columns' pointers
}

var errShortMessage = errors.New("message ends early")

// parse parses a row message of protocol version 1 (msg[0] is 'I', 'U' or
// 'D'). oldTuple and newTuple are nil when the message has none; they are
// overwritten by the next call.
func (p *rowParser) parse(msg []byte) (op Op, relID uint32, oldTuple, newTuple *pglogrepl.TupleData, err error) {
	if len(msg) < 6 {
		return 0, 0, nil, nil, fmt.Errorf("pgoutput %q message: %w", msg[:min(len(msg), 1)], errShortMessage)
	}
	relID = binary.BigEndian.Uint32(msg[1:5])
	rest := msg[5:]
	switch msg[0] {
	case 'I':
		op = OpInsert
	case 'U':
		op = OpUpdate
	case 'D':
		op = OpDelete
	default:
		return 0, 0, nil, nil, fmt.Errorf("pgoutput: %q is not a row message", msg[0])
	}
	if rest[0] == 'K' || rest[0] == 'O' {
		if op == OpInsert {
			return 0, 0, nil, nil, fmt.Errorf("pgoutput INSERT on relation %d: unexpected old tuple", relID)
		}
		if rest, err = p.old.decode(rest[1:]); err != nil {
			return 0, 0, nil, nil, fmt.Errorf("pgoutput %s on relation %d: old tuple: %w", opName(op), relID, err)
		}
		oldTuple = &p.old.td
	}
	if op == OpDelete {
		if oldTuple == nil {
			return 0, 0, nil, nil, fmt.Errorf("pgoutput DELETE on relation %d: no old tuple", relID)
		}
	} else {
		if len(rest) == 0 || rest[0] != 'N' {
			return 0, 0, nil, nil, fmt.Errorf("pgoutput %s on relation %d: no new tuple", opName(op), relID)
		}
		if rest, err = p.new.decode(rest[1:]); err != nil {
			return 0, 0, nil, nil, fmt.Errorf("pgoutput %s on relation %d: new tuple: %w", opName(op), relID, err)
		}
		newTuple = &p.new.td
	}
	if len(rest) != 0 {
		return 0, 0, nil, nil, fmt.Errorf("pgoutput %s on relation %d: %d bytes after the tuple", opName(op), relID, len(rest))
	}
	return op, relID, oldTuple, newTuple, nil
}

// decode reads one TupleData from src and returns what follows it.
func (b *tupleBuf) decode(src []byte) ([]byte, error) {
	if len(src) < 2 {
		return nil, errShortMessage
	}
	n := int(binary.BigEndian.Uint16(src))
	src = src[2:]
	if cap(b.cols) < n {
		b.cols = make([]pglogrepl.TupleDataColumn, n)
		b.td.Columns = make([]*pglogrepl.TupleDataColumn, n)
		for i := range b.cols {
			b.td.Columns[i] = &b.cols[i]
		}
	}
	b.td.ColumnNum = uint16(n)
	b.td.Columns = b.td.Columns[:n]
	for i := range n {
		if len(src) < 1 {
			return nil, errShortMessage
		}
		c := b.td.Columns[i]
		c.DataType, c.Length, c.Data = src[0], 0, nil
		src = src[1:]
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if len(src) < 4 {
				return nil, errShortMessage
			}
			l := binary.BigEndian.Uint32(src)
			src = src[4:]
			if uint64(l) > uint64(len(src)) {
				return nil, fmt.Errorf("column %d: length %d: %w", i+1, l, errShortMessage)
			}
			c.Length, c.Data = l, src[:l:l]
			src = src[l:]
		default:
			return nil, fmt.Errorf("column %d: unknown tuple data type %q", i+1, c.DataType)
		}
	}
	return src, nil
}

func opName(op Op) string {
	switch op {
	case OpInsert:
		return "INSERT"
	case OpUpdate:
		return "UPDATE"
	default:
		return "DELETE"
	}
}

// isPlainString reports whether relation.DecodeText returns a column of
// kind k as its text, unchanged and unchecked.
func isPlainString(k relation.Kind) bool {
	return k == relation.Text || k == relation.JSON || k == relation.Enum
}

// rowStrings returns the text of every used plain-string column of tuple
// (see isPlainString), concatenated in column order into one string: a row's
// strings then cost one allocation instead of one each (they live and die
// together, with the row). decodeTuple slices it back apart.
func rowStrings(t *relation.Table, tuple *pglogrepl.TupleData) string {
	n := 0
	for i, col := range tuple.Columns {
		if rowString(&t.Columns[i], col) {
			n += len(col.Data)
		}
	}
	if n == 0 {
		return ""
	}
	var b strings.Builder
	b.Grow(n)
	for i, col := range tuple.Columns {
		if rowString(&t.Columns[i], col) {
			b.Write(col.Data)
		}
	}
	return b.String()
}

// rowString reports whether rowStrings carries col's value.
func rowString(c *relation.Column, col *pglogrepl.TupleDataColumn) bool {
	return col.DataType == pglogrepl.TupleDataTypeText && !c.Unused && isPlainString(c.Type.Kind)
}
