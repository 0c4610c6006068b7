package source

import (
	"context"
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/relation"
)

// discardHandler acknowledges every change at once and keeps nothing: the
// stream's own cost, without a pipeline.
type discardHandler struct{}

func (discardHandler) Handle(_ context.Context, c *Change) error { c.Ack.Done(); return nil }
func (discardHandler) Flush(context.Context) error               { return nil }

// xlogData wraps a pgoutput message as the CopyData payload of an XLogData.
func xlogData(msg []byte) []byte {
	b := []byte{pglogrepl.XLogDataByteID}
	b = binary.BigEndian.AppendUint64(b, 1) // WALStart
	b = binary.BigEndian.AppendUint64(b, 2) // ServerWALEnd
	b = binary.BigEndian.AppendUint64(b, 3) // ServerTime
	return append(b, msg...)
}

func beginMsg(final pglogrepl.LSN, xid uint32) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'B'}, uint64(final))
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, xid)
}

func commitMsg(lsn, end pglogrepl.LSN) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'C', 0}, uint64(lsn))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	return binary.BigEndian.AppendUint64(b, 0)
}

func relationMsg(id uint32, schema, name string, cols ...relation.Column) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'R'}, id)
	b = append(append(b, schema...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for i, c := range cols {
		flag := byte(0)
		if i == 0 {
			flag = 1
		}
		b = append(b, flag)
		b = append(append(b, c.Name...), 0)
		b = binary.BigEndian.AppendUint32(b, c.Type.OID)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

// BenchmarkStreamInsert measures the stream's cost per INSERT of a narrow
// row (int, bigint, text, text, timestamptz) from the XLogData payload to
// Handle, transactions of 1,000 rows: the receive loop's hot path.
func BenchmarkStreamInsert(b *testing.B) {
	cols := []relation.Column{
		{Name: "id", Type: relation.Type{OID: 23, Kind: relation.Int32}},
		{Name: "n", Type: relation.Type{OID: 20, Kind: relation.Int64}},
		{Name: "a", Type: relation.Type{OID: 25, Kind: relation.Text}},
		{Name: "b", Type: relation.Type{OID: 25, Kind: relation.Text}},
		{Name: "at", Type: relation.Type{OID: 1184, Kind: relation.TimestampTZ}},
	}
	tbl := relation.Table{Schema: "public", Name: "items", Columns: cols, PrimaryKey: []string{"id"}}
	src, err := New(Config{URL: "x", Slot: "s", Publication: "p", StateDir: b.TempDir()}, []relation.Table{tbl})
	if err != nil {
		b.Fatal(err)
	}
	feed := newBenchFeed(src, discardHandler{})
	ctx := context.Background()
	if err := feed(ctx, xlogData(beginMsg(100, 7))); err != nil {
		b.Fatal(err)
	}
	if err := feed(ctx, xlogData(relationMsg(16384, "public", "items", cols...))); err != nil {
		b.Fatal(err)
	}
	const rows = 1000
	msgs := make([][]byte, rows)
	for i := range msgs {
		id := []byte(strconv.Itoa(i))
		msgs[i] = xlogData(rowMsg('I', 16384, []byte("N"), tupleBytes(id, []byte("1234567890"),
			[]byte("some short text"), []byte("another value here"), []byte("2026-12-06 21:40:00.123456+00"))))
	}
	begin, commit := xlogData(beginMsg(100, 7)), xlogData(commitMsg(100, 101))
	if err := feed(ctx, commit); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	n := 0
	for b.Loop() {
		if n%rows == 0 {
			if err := feed(ctx, begin); err != nil {
				b.Fatal(err)
			}
		}
		if err := feed(ctx, msgs[n%rows]); err != nil {
			b.Fatal(err)
		}
		n++
		if n%rows == 0 {
			if err := feed(ctx, commit); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "rows/s")
}

// newBenchFeed returns a function that hands one CopyData payload to a
// stream of src reading for h, as the receive loop does.
func newBenchFeed(src *Source, h Handler) func(context.Context, []byte) error {
	st := &stream{src: src, h: h, cp: newCheckpoint(0)}
	st.r = newWALReader(nil, "bench", st, 0, nil)
	return func(ctx context.Context, data []byte) error {
		err := st.r.copyData(ctx, data)
		st.cp.advance()
		return err
	}
}
