package broker

import (
	"testing"
	"time"
)

func TestCompactionDue(t *testing.T) {
	t.Parallel()
	const minDirty = 100
	for _, tt := range []struct {
		total, clean int64
		want         bool
	}{
		{0, 0, false},
		{99, 0, false},    // below the minimum growth
		{100, 0, true},    // first pass once the log reaches the minimum
		{150, 100, false}, // grew by less than the minimum
		{199, 100, false},
		{200, 100, true},    // grew by the minimum and by what the last pass left
		{1500, 1000, false}, // grew by more than the minimum, less than the clean part
		{2000, 1000, true},
	} {
		if got := compactionDue(tt.total, tt.clean, minDirty); got != tt.want {
			t.Errorf("compactionDue(total %d, clean %d, min %d) = %v, want %v", tt.total, tt.clean, minDirty, got, tt.want)
		}
	}
}

// TestCompactionWaitsForGrowth drives the compactor's check by hand (its
// ticker is an hour away): no pass while the compacted topics are smaller
// than the minimum, one once they reach it, and none right after, since
// nothing new was written. A non-compacted topic does not count.
func TestCompactionWaitsForGrowth(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{DataDir: t.TempDir(), CompactionInterval: time.Hour, CompactionMinDirtyBytes: 1 << 20})
	const topic, plain = "grows", "plain"
	adm := newAdmin(t, e.Addr())
	ensure(t, adm, TopicSpec{Name: topic, Partitions: 1})
	if _, err := adm.CreateTopic(t.Context(), 1, 1, nil, plain); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, e.Addr(), &ProducerConfig{})
	big := string(make([]byte, 300<<10))
	produceSync(t, cl, plain, [2]string{"p1", big}, [2]string{"p2", big}, [2]string{"p3", big}, [2]string{"p4", big})
	produceSync(t, cl, topic, [2]string{"k", "v1"}, [2]string{"k", "v2"}, [2]string{"other", "x"})

	check := func(want bool) {
		t.Helper()
		did, err := e.compactor.check(t.Context())
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		if did != want {
			t.Fatalf("compaction pass: got %v, want %v", did, want)
		}
	}
	check(false)
	if start := e.Cluster().PartitionInfo(topic, 0).LogStartOffset; start != 0 {
		t.Fatalf("compacted below the minimum growth: log start offset %d", start)
	}
	// Four more batches of ~300 KB: past 1 MiB, and k=v2 superseded by
	// a batch that is not the last.
	for i := range 4 {
		produceSync(t, cl, topic, [2]string{"k", big}, [2]string{"filler", string(rune('a' + i))})
	}
	check(true)
	if start := e.Cluster().PartitionInfo(topic, 0).LogStartOffset; start == 0 {
		t.Fatal("a pass ran but nothing was compacted")
	}
	check(false)
}
