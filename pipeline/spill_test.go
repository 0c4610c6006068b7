package pipeline

import (
	"os"
	"slices"
	"testing"
)

// The first spread of a reconcile has one bucket per spillBucketRecords of
// the topic, so a bucket's keys stay about as many whatever the topic's,
// up to maxSpillFiles files open at once.
func TestSpillBuckets(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		records int64
		want    int
	}{
		{"empty topic", 0, 1},
		{"one record", 1, 1},
		{"one bucket's worth", spillBucketRecords, 1},
		{"one more", spillBucketRecords + 1, 2},
		{"ten buckets' worth", 10 * spillBucketRecords, 10},
		{"the most files", maxSpillFiles * spillBucketRecords, maxSpillFiles},
		{"more: buckets split when read", 1000 * maxSpillFiles * spillBucketRecords, maxSpillFiles},
		{"nonsense", -5, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := spillBuckets(tt.records); got != tt.want {
				t.Errorf("spillBuckets(%d): got %d, want %d", tt.records, got, tt.want)
			}
		})
	}
}

// The spill finds the orphans: keys whose latest record before since is
// live and that have no record since, whichever bucket they land in, and
// when bucket files over the size bound are split again (a small bound):
// then no more keys are held in memory at once than a file of the bound
// holds, and one key written more times than the bound holds, which no
// split can spread, is read whole.
func TestSpillOrphans(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		buckets  int
		maxBytes int64
		split    bool
	}{
		{"one bucket", 1, defaultSpillBucketBytes, false},
		{"many buckets", 64, defaultSpillBucketBytes, false},
		{"one bucket split again", 1, 256, true},
		{"buckets split again", 3, 256, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			sp, err := newSpill(dir, tt.buckets, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.close()
			want := addSpillCases(t, sp)
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
			if tt.split {
				// A record of a two-byte key takes 4 bytes.
				if most := int(tt.maxBytes / 4); sp.splits == 0 || sp.peakKeys > most {
					t.Errorf("%d splits, at most %d keys in memory at once; want splits and at most %d keys", sp.splits, sp.peakKeys, most)
				}
			} else if sp.splits != 0 {
				t.Errorf("%d splits under a bound of %d bytes, want none", sp.splits, tt.maxBytes)
			}
			left, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 0 {
				t.Errorf("%d files left in the spill directory, want every bucket removed once read", len(left))
			}
		})
	}
}

// addSpillCases adds the records of 1,000 keys of two bytes, in five
// histories, and two keys of 1,000 records each, and returns the orphans.
func addSpillCases(t *testing.T, sp *spill) []string {
	t.Helper()
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
	// Keys written many times (an uncompacted topic): one ends live, an
	// orphan; the other was republished.
	hot, republished := []byte{0xff, 0x01}, []byte{0xff, 0x02}
	for i := range 1000 {
		add(t, sp, hot, spillGone+byte(i%2))
		add(t, sp, republished, spillLive)
	}
	add(t, sp, republished, spillSince)
	return append(want, string(hot))
}

func add(t *testing.T, sp *spill, key []byte, state byte) {
	t.Helper()
	if err := sp.add(key, state); err != nil {
		t.Fatal(err)
	}
}
