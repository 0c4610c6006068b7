package sink

import (
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestLatestPerKey: a batch keeps the last record of each (source, topic
// key), in order; an owner key of one integer is the same key whatever
// its Go integer type, and never the same as a text key or another
// source's key.
func TestLatestPerKey(t *testing.T) {
	t.Parallel()
	var recs []*kgo.Record
	ent := func(src int, tn int64, tk string) entry {
		recs = append(recs, &kgo.Record{Offset: int64(len(recs))})
		return entry{src: src, tn: tn, tk: tk, rec: recs[len(recs)-1]}
	}
	all := []entry{ent(0, 1, ""), ent(0, 2, ""), ent(0, 1, ""), ent(0, 0, "[1,2]"), ent(1, 0, "h"), ent(0, 0, ""), ent(1, 0, "h"), ent(0, 0, "[1,2]")}
	var got []int64
	for _, e := range latest(all) {
		got = append(got, e.rec.Offset)
	}
	if want := []int64{1, 2, 5, 6, 7}; !reflect.DeepEqual(got, want) {
		t.Errorf("kept offsets %v, want %v", got, want)
	}
	if unique := all[:2]; &latest(unique)[0] != &unique[0] {
		t.Error("a batch of distinct keys was copied")
	}
	for _, vals := range [][]any{{int(7)}, {int32(7)}, {int64(7)}} {
		if n, ok := oneInt(vals); !ok || n != 7 {
			t.Errorf("oneInt(%#v) = %d, %v; want 7, true", vals, n, ok)
		}
	}
	for _, vals := range [][]any{{}, {"7"}, {int64(7), int64(8)}, {nil}} {
		if _, ok := oneInt(vals); ok {
			t.Errorf("oneInt(%#v) took a key that is not one integer", vals)
		}
	}
}
