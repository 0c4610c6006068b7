package pipeline

import (
	"slices"
	"testing"
)

// The spill finds the orphans: keys whose latest record before since is
// live and that have no record since, whichever bucket they land in.
func TestSpillOrphans(t *testing.T) {
	sp, err := newSpill(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	var want []string
	for i := range 1000 {
		k := []byte{byte(i >> 8), byte(i)}
		switch i % 5 {
		case 0: // live before, nothing since: an orphan
			add(t, sp, k, spillLive)
			want = append(want, string(k))
		case 1: // live, then deleted before since
			add(t, sp, k, spillLive)
			add(t, sp, k, spillGone)
		case 2: // live before, republished since
			add(t, sp, k, spillLive)
			add(t, sp, k, spillSince)
		case 3: // deleted, then live again before since: an orphan
			add(t, sp, k, spillGone)
			add(t, sp, k, spillLive)
			want = append(want, string(k))
		case 4: // a record since, then nothing: not an orphan whatever came before
			add(t, sp, k, spillSince)
			add(t, sp, k, spillLive)
		}
	}
	var got []string
	if err := sp.each(func(key []byte) error {
		got = append(got, string(key))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("orphans: got %d keys, want %d", len(got), len(want))
	}
}

func add(t *testing.T, sp *spill, key []byte, state byte) {
	t.Helper()
	if err := sp.add(key, state); err != nil {
		t.Fatal(err)
	}
}
