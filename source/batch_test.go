package source

import (
	"bytes"
	"strings"
	"testing"

	"github.com/replicator/replicator/relation"
)

// A batch gives back each row's values as added: NULL and unused columns
// as nil, an empty text as empty but not NULL.
func TestRowBatchKeepsRows(t *testing.T) {
	cols := []relation.Column{{Name: "id"}, {Name: "skip", Unused: true}, {Name: "v"}}
	rows := [][][]byte{
		{[]byte("1"), []byte("unused"), []byte("one")},
		{[]byte("2"), nil, nil},
		{[]byte("3"), []byte("x"), []byte{}},
	}
	var pool batchPool // nil: allocates
	b := pool.get(4, len(cols))
	for _, r := range rows {
		b.add(r, cols)
	}
	if b.table != 4 || b.rows != 3 {
		t.Fatalf("batch: table %d, %d rows; want 4, 3", b.table, b.rows)
	}
	var got [][]byte
	for i, r := range rows {
		got = b.row(i, got)
		want := [][]byte{r[0], nil, r[2]}
		for c := range want {
			if (got[c] == nil) != (want[c] == nil) || !bytes.Equal(got[c], want[c]) {
				t.Errorf("row %d column %d: got %q (nil %v), want %q (nil %v)", i, c, got[c], got[c] == nil, want[c], want[c] == nil)
			}
		}
	}
	// Empty values in a batch that holds no byte at all are still not NULL.
	empty := pool.get(0, 2)
	empty.add([][]byte{{}, nil}, cols[:2:2])
	if got := empty.row(0, nil); got[0] == nil || len(got[0]) != 0 || got[1] != nil {
		t.Errorf("row of an empty value and a NULL: got %#v, want [[] nil]", got)
	}
	// A value cannot reach into the next one's bytes.
	got = b.row(0, got)
	if cap(got[0]) != len(got[0]) {
		t.Errorf("row 0 id: capacity %d beyond its length %d", cap(got[0]), len(got[0]))
	}
}

// A batch is sent when it holds batchRows rows or batchBytes of values,
// whichever comes first; an emitted batch is reused empty, unless it grew
// past maxKeptBatch.
func TestRowBatchBoundsAndReuse(t *testing.T) {
	cols := []relation.Column{{Name: "v"}}
	pool := make(batchPool, 2)
	b := pool.get(0, 1)
	for range batchRows - 1 {
		b.add([][]byte{[]byte("x")}, cols)
	}
	if b.full() {
		t.Fatalf("full at %d rows, want not before %d", b.rows, batchRows)
	}
	b.add([][]byte{[]byte("x")}, cols)
	if !b.full() {
		t.Fatalf("not full at %d rows", b.rows)
	}
	pool.put(b)
	again := pool.get(1, 1)
	if again != b || again.rows != 0 || len(again.data) != 0 || len(again.offs) != 0 || again.table != 1 {
		t.Errorf("reused batch: same %v, %d rows, %d bytes, %d offsets, table %d; want the same batch, empty, table 1",
			again == b, again.rows, len(again.data), len(again.offs), again.table)
	}

	big := pool.get(0, 1)
	big.add([][]byte{[]byte(strings.Repeat("y", batchBytes))}, cols)
	if !big.full() {
		t.Errorf("a batch of one %d-byte row is not full", batchBytes)
	}
	huge := pool.get(0, 1)
	huge.add([][]byte{[]byte(strings.Repeat("z", maxKeptBatch+1))}, cols)
	pool.put(huge)
	if next := pool.get(0, 1); next == huge {
		t.Errorf("a batch grown past maxKeptBatch was kept for reuse")
	}
}

// A line with nothing escaped is cut at its tabs as splitCopyLine would
// cut it; a line with too few or too many columns is refused and leaves
// the batch as it was.
func TestRowBatchAddLine(t *testing.T) {
	cols := []relation.Column{{Name: "id"}, {Name: "skip", Unused: true}, {Name: "v"}, {Name: "w"}}
	var pool batchPool
	b := pool.get(0, len(cols))
	lines := []string{"1\tx\tone\t", "2\t\t\ttwo", "3\ty\t{a,b}\t{\"k\": 1}"}
	for _, l := range lines {
		if err := b.addLine([]byte(l), cols); err != nil {
			t.Fatalf("addLine(%q): %v", l, err)
		}
	}
	for _, bad := range []string{"4\tx\tthree", "5\tx\ty\tz\textra"} {
		if err := b.addLine([]byte(bad), cols); err == nil || !strings.Contains(err.Error(), "want 4") {
			t.Errorf("addLine(%q): got %v, want a column count error", bad, err)
		}
	}
	if b.rows != len(lines) {
		t.Fatalf("rows: got %d, want %d", b.rows, len(lines))
	}
	var got [][]byte
	for i, l := range lines {
		want, _, err := splitCopyLine([]byte(l), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[1] = nil // unused
		got = b.row(i, got)
		for c := range want {
			if (got[c] == nil) != (want[c] == nil) || !bytes.Equal(got[c], want[c]) {
				t.Errorf("line %d column %d: got %q, want %q", i, c, got[c], want[c])
			}
		}
	}
}
