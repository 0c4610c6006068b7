package source

import (
	"bytes"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// tupleBytes encodes a TupleData: nil is NULL, "\x00u" unchanged TOAST,
// anything else a text value.
func tupleBytes(cols ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(cols)))
	for _, c := range cols {
		switch {
		case c == nil:
			b = append(b, 'n')
		case string(c) == "\x00u":
			b = append(b, 'u')
		default:
			b = append(b, 't')
			b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
			b = append(b, c...)
		}
	}
	return b
}

func rowMsg(kind byte, relID uint32, parts ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{kind}, relID)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// TestRowParserMatchesPglogrepl parses each kind of row message and checks
// the result equals pglogrepl.Parse's, also when the buffers are reused by
// a wider and then a narrower tuple.
func TestRowParserMatchesPglogrepl(t *testing.T) {
	wide := tupleBytes([]byte("1"), nil, []byte("\x00u"), []byte(""), []byte("héllo"))
	narrow := tupleBytes([]byte("2"))
	msgs := []struct {
		name string
		msg  []byte
		op   Op
	}{
		{"insert", rowMsg('I', 7, []byte("N"), wide), OpInsert},
		{"update", rowMsg('U', 7, []byte("N"), narrow), OpUpdate},
		{"update with key", rowMsg('U', 8, []byte("K"), narrow, []byte("N"), wide), OpUpdate},
		{"update with old row", rowMsg('U', 8, []byte("O"), wide, []byte("N"), wide), OpUpdate},
		{"delete by key", rowMsg('D', 9, []byte("K"), narrow), OpDelete},
		{"delete full", rowMsg('D', 9, []byte("O"), wide), OpDelete},
	}
	var p rowParser
	for _, m := range msgs {
		op, relID, oldT, newT, err := p.parse(m.msg)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if op != m.op {
			t.Errorf("%s: op %v, want %v", m.name, op, m.op)
		}
		want, err := pglogrepl.Parse(m.msg)
		if err != nil {
			t.Fatalf("%s: pglogrepl: %v", m.name, err)
		}
		var wantRel uint32
		var wantOld, wantNew *pglogrepl.TupleData
		switch w := want.(type) {
		case *pglogrepl.InsertMessage:
			wantRel, wantNew = w.RelationID, w.Tuple
		case *pglogrepl.UpdateMessage:
			wantRel, wantOld, wantNew = w.RelationID, w.OldTuple, w.NewTuple
		case *pglogrepl.DeleteMessage:
			wantRel, wantOld = w.RelationID, w.OldTuple
		}
		if relID != wantRel {
			t.Errorf("%s: relation %d, want %d", m.name, relID, wantRel)
		}
		sameTuple(t, m.name+" old", oldT, wantOld)
		sameTuple(t, m.name+" new", newT, wantNew)
	}
}

func sameTuple(t *testing.T, what string, got, want *pglogrepl.TupleData) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Errorf("%s: got %v, want %v", what, got, want)
		return
	}
	if got == nil {
		return
	}
	if got.ColumnNum != want.ColumnNum || len(got.Columns) != len(want.Columns) {
		t.Errorf("%s: %d columns (%d), want %d", what, got.ColumnNum, len(got.Columns), want.ColumnNum)
		return
	}
	for i := range got.Columns {
		g, w := got.Columns[i], want.Columns[i]
		if g.DataType != w.DataType || g.Length != w.Length || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s column %d: got %c %d %q, want %c %d %q", what, i, g.DataType, g.Length, g.Data, w.DataType, w.Length, w.Data)
		}
	}
}

// TestRowParserRejectsMalformed: every malformed message is an error, never
// a panic or a silently shortened row.
func TestRowParserRejectsMalformed(t *testing.T) {
	good := rowMsg('I', 7, []byte("N"), tupleBytes([]byte("abc"), nil))
	tests := []struct {
		name, want string
		msg        []byte
	}{
		{"empty", "ends early", []byte{}},
		{"no relation", "ends early", []byte("I\x00\x00")},
		{"not a row", "not a row message", rowMsg('X', 1, []byte("N"))},
		{"insert with old", "unexpected old tuple", rowMsg('I', 1, []byte("K"), tupleBytes(), []byte("N"), tupleBytes())},
		{"insert without N", "no new tuple", rowMsg('I', 1, []byte("Z"), tupleBytes())},
		{"update without new", "no new tuple", rowMsg('U', 1, []byte("K"), tupleBytes([]byte("1")))},
		{"delete without old", "no old tuple", rowMsg('D', 1, []byte("N"), tupleBytes())},
		{"unknown column kind", "unknown tuple data type", rowMsg('I', 1, []byte("N"), []byte{0, 1, 'q'})},
		{"trailing bytes", "after the tuple", append(append([]byte{}, good...), 'x')},
	}
	for i := 1; i < len(good); i++ {
		tests = append(tests, struct {
			name, want string
			msg        []byte
		}{"cut at " + strconv.Itoa(i), "", good[:i]})
	}
	var p rowParser
	for _, tt := range tests {
		_, _, _, _, err := p.parse(tt.msg)
		if err == nil {
			t.Errorf("%s: no error for %q", tt.name, tt.msg)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q does not say %q", tt.name, err, tt.want)
		}
	}
}

// FuzzRowParser: no input panics, and a parsed column never reaches
// outside the message.
func FuzzRowParser(f *testing.F) {
	f.Add(rowMsg('I', 7, []byte("N"), tupleBytes([]byte("abc"), nil, []byte("\x00u"))))
	f.Add(rowMsg('U', 7, []byte("O"), tupleBytes([]byte("1")), []byte("N"), tupleBytes([]byte("2"))))
	f.Add(rowMsg('D', 7, []byte("K"), tupleBytes([]byte("1"))))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var p rowParser
		_, _, oldT, newT, err := p.parse(msg)
		if err != nil {
			return
		}
		total := 0
		for _, td := range []*pglogrepl.TupleData{oldT, newT} {
			if td == nil {
				continue
			}
			for _, c := range td.Columns {
				total += len(c.Data)
			}
		}
		if total > len(msg) {
			t.Fatalf("columns hold %d bytes of a %d-byte message", total, len(msg))
		}
	})
}

// TestDecodeTupleSharesOneString: plain-string columns come out of one
// concatenated string (rowStrings) and must equal what DecodeText gives
// each, around NULLs, unchanged TOAST, empty strings and other kinds, and
// stay intact once the message buffer is reused.
func TestDecodeTupleSharesOneString(t *testing.T) {
	kinds := []relation.Kind{relation.Text, relation.Int64, relation.JSON, relation.Text, relation.Enum, relation.Text, relation.Numeric, relation.Text}
	table := &relation.Table{Schema: "public", Name: "t"}
	for i, k := range kinds {
		table.Columns = append(table.Columns, relation.Column{Name: "c" + strconv.Itoa(i), Type: relation.Type{Kind: k}})
	}
	msg := rowMsg('I', 1, []byte("N"), tupleBytes(
		[]byte("héllo"), []byte("42"), []byte(`{"a": [1, 2]}`), nil, []byte("happy"), []byte(""), []byte("12.50"), []byte("\x00u")))
	var p rowParser
	_, _, _, tuple, err := p.parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	row, err := decodeTuple(table, tuple)
	if err != nil {
		t.Fatal(err)
	}
	clear(msg) // the receive buffer is reused for the next message
	want := []any{"héllo", int64(42), `{"a": [1, 2]}`, nil, "happy", "", "12.50", relation.UnchangedTOAST{}}
	if len(row) != len(want) {
		t.Fatalf("row %v, want %v", row, want)
	}
	for i := range want {
		if row[i] != want[i] {
			t.Errorf("column %d (%v): got %#v, want %#v", i, kinds[i], row[i], want[i])
		}
	}
}

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestReadDeadlineArm: the receive bound is set when there is none, when
// it has passed, when the next status update is due sooner, after a reset
// and on a new connection; left alone otherwise (a busy stream must not
// pay for it per message).
func TestReadDeadlineArm(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	c1, c2 := &deadlineConn{}, &deadlineConn{}
	var r readDeadline
	steps := []struct {
		name      string
		conn      *deadlineConn
		now, next time.Time
		reset     bool
		want      time.Time // zero: not set
	}{
		{name: "first", conn: c1, now: ms(0), next: ms(10_000), want: ms(250)},
		{name: "still holds", conn: c1, now: ms(100), next: ms(10_000)},
		{name: "passed", conn: c1, now: ms(250), next: ms(10_000), want: ms(500)},
		{name: "status due sooner", conn: c1, now: ms(300), next: ms(400), want: ms(400)},
		{name: "status deadline holds", conn: c1, now: ms(350), next: ms(400)},
		{name: "status moved later: still bounded", conn: c1, now: ms(380), next: ms(10_000)},
		{name: "reset after a status update", conn: c1, now: ms(390), next: ms(10_000), reset: true, want: ms(640)},
		{name: "new connection", conn: c2, now: ms(400), next: ms(10_000), want: ms(650)},
	}
	for _, s := range steps {
		if s.reset {
			r = readDeadline{}
		}
		n1, n2 := len(c1.set), len(c2.set)
		if err := r.arm(s.conn, s.now, s.next); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var got []time.Time
		got = append(got, c1.set[n1:]...)
		got = append(got, c2.set[n2:]...)
		switch {
		case s.want.IsZero() && len(got) != 0:
			t.Errorf("%s: set %v, want nothing", s.name, got)
		case !s.want.IsZero() && (len(got) != 1 || !got[0].Equal(s.want) || len(s.conn.set) == 0 || !s.conn.set[len(s.conn.set)-1].Equal(s.want)):
			t.Errorf("%s: set %v, want %v on its connection", s.name, got, s.want)
		}
	}
}
