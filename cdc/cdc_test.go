package cdc

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestOpRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		op   Op
		code string
	}{{OpRead, "r"}, {OpCreate, "c"}, {OpUpdate, "u"}, {OpDelete, "d"}} {
		if got := tc.op.String(); got != tc.code {
			t.Errorf("Op(%d).String(): got %q, want %q", tc.op, got, tc.code)
		}
		got, err := ParseOp([]byte(tc.code))
		if err != nil || got != tc.op {
			t.Errorf("ParseOp(%q): got %v, %v, want %v", tc.code, got, err, tc.op)
		}
	}
	if got := Op(0).String(); got != "?" {
		t.Errorf("Op(0).String(): got %q, want ?", got)
	}
}

func TestParseOpRefuses(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "t", "x", "cc", "C", "insert"} {
		if op, err := ParseOp([]byte(in)); err == nil {
			t.Errorf("ParseOp(%q): got %v, want an error", in, op)
		}
	}
}

func TestRecordOp(t *testing.T) {
	t.Parallel()
	hs := []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("0/16B3748")}, {Key: HeaderOp, Value: []byte("u")}}
	if op, err := RecordOp(hs); err != nil || op != OpUpdate {
		t.Errorf("RecordOp: got %v, %v, want u", op, err)
	}
	if v, ok := Header(hs, HeaderLSN); !ok || string(v) != "0/16B3748" {
		t.Errorf("Header(lsn): got %q, %v, want 0/16B3748", v, ok)
	}
	if _, ok := Header(hs, HeaderXID); ok {
		t.Errorf("Header(xid): found one in headers without it")
	}
	if op, err := RecordOp(hs[:1]); err == nil {
		t.Errorf("RecordOp without an op header: got %v, want an error", op)
	}
}

func TestCommitTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2026, 12, 6, 21, 33, 0, 123456000, time.UTC)
	text := want.Format(CommitTimeLayout)
	if text != "2026-12-06T21:33:00.123456Z" {
		t.Fatalf("format: got %s, want 2026-12-06T21:33:00.123456Z", text)
	}
	got, err := ParseCommitTime([]byte(text))
	if err != nil || !got.Equal(want) {
		t.Errorf("ParseCommitTime(%s): got %v, %v, want %v", text, got, err, want)
	}
	if _, err := ParseCommitTime([]byte("yesterday")); err == nil {
		t.Errorf("ParseCommitTime(yesterday): got no error")
	}
}
