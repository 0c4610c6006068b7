// Package cdc is the change metadata of entity topics: the record header
// names and the operation codes a producer stamps on every record. It is
// the contract between the side that writes the topics (pipeline) and any
// consumer (the sink, demo's read-back, tests), which must not depend on
// each other: both import this leaf package, which imports nothing of
// ours.
//
// Every record carries, besides its key and value:
//
//	op         r, c, u or d (see [Op]); a tombstone always says d
//	lsn        the commit LSN of its transaction, PostgreSQL's X/X form
//	commit_ts  the commit time, RFC 3339 with microseconds, UTC ([CommitTimeLayout])
//	xid        the transaction id; absent for snapshot rows
//	republish  the id of the republish request a row was read for (op r);
//	           absent otherwise
//
// Change metadata lives only in headers, never in the value, so a value
// is exactly the row and compaction keeps the latest one per key.
package cdc

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record header names.
const (
	HeaderOp         = "op"
	HeaderLSN        = "lsn"
	HeaderCommitTime = "commit_ts"
	HeaderXID        = "xid"
	HeaderRepublish  = "republish"
)

// CommitTimeLayout is the time layout of the commit_ts header: RFC 3339
// with exactly six fractional digits, always in UTC ("Z").
const CommitTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Op is what a record says happened to its row (Debezium's convention).
// The zero value is no operation and never appears on a topic.
type Op uint8

const (
	OpRead   Op = iota + 1 // r: a row read by a snapshot
	OpCreate               // c: an inserted row
	OpUpdate               // u: an updated row
	OpDelete               // d: a deleted row or a TRUNCATE's; the record is a tombstone
)

// String is the op's one-letter code, as the op header carries it; "?"
// for a value that is not an op.
func (o Op) String() string {
	switch o {
	case OpRead:
		return "r"
	case OpCreate:
		return "c"
	case OpUpdate:
		return "u"
	case OpDelete:
		return "d"
	default:
		return "?"
	}
}

// ParseOp reads an op header's value.
func ParseOp(b []byte) (Op, error) {
	if len(b) == 1 {
		switch b[0] {
		case 'r':
			return OpRead, nil
		case 'c':
			return OpCreate, nil
		case 'u':
			return OpUpdate, nil
		case 'd':
			return OpDelete, nil
		}
	}
	return 0, fmt.Errorf("op header %q: want one of r, c, u, d", b)
}

// Header returns the value of the first header called name, and whether
// there is one.
func Header(hs []kgo.RecordHeader, name string) ([]byte, bool) {
	for _, h := range hs {
		if h.Key == name {
			return h.Value, true
		}
	}
	return nil, false
}

// RecordOp reads the op header of a record's headers; a record without
// one, or with an unknown code, is an error.
func RecordOp(hs []kgo.RecordHeader) (Op, error) {
	v, ok := Header(hs, HeaderOp)
	if !ok {
		return 0, fmt.Errorf("no %q header", HeaderOp)
	}
	return ParseOp(v)
}

// ParseCommitTime reads a commit_ts header's value. It accepts any RFC 3339
// time, with or without fractional seconds, of which [CommitTimeLayout] is
// one form.
func ParseCommitTime(b []byte) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s header: %w", HeaderCommitTime, err)
	}
	return t, nil
}
