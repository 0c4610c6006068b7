package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// readTopic runs ReadToEnd against addr and returns the records it passed
// to fn, as "key=value" per partition ("key=" for a tombstone), and the
// end offsets it returned.
func readTopic(t *testing.T, addr, topic string, from map[int32]int64) (map[int32][]string, map[int32]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	got := map[int32][]string{}
	ends, err := ReadToEnd(ctx, readOpts(t, addr), topic, from, func(r *kgo.Record) error {
		got[r.Partition] = append(got[r.Partition], string(r.Key)+"="+string(r.Value))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadToEnd %s: %v", topic, err)
	}
	return got, ends
}

func readOpts(t *testing.T, addr string) []kgo.Opt {
	t.Helper()
	opts, err := Config{Brokers: []string{addr}, ClientID: "read-test"}.ClientOptions()
	if err != nil {
		t.Fatalf("ClientOptions: %v", err)
	}
	return opts
}

// produceTo produces kvs to one partition, one request each ("" value:
// tombstone).
func produceTo(t *testing.T, cl *kgo.Client, topic string, p int32, kvs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for i := 0; i+1 < len(kvs); i += 2 {
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte(kvs[i]), Value: []byte(kvs[i+1])}
		if kvs[i+1] == "" {
			r.Value = nil
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s to partition %d: %v", kvs[i], p, err)
		}
	}
}

func manualProducer(t *testing.T, addr string, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	return newClient(t, addr, nil, append([]kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())}, extra...)...)
}

func checkRead(t *testing.T, got, want map[int32][]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if !slices.Equal(got[p], want[p]) {
			t.Errorf("partition %d: got %q, want %q", p, got[p], want[p])
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("partition %d: got %q, want nothing read", p, got[p])
		}
	}
}

// TestReadToEnd: every partition is read from its start, in offset order,
// an empty one included; with start offsets, from there; the end offsets
// returned are where each partition ended.
func TestReadToEnd(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-to-end"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 3})
	cl := manualProducer(t, e.Addr())
	produceTo(t, cl, topic, 0, "a", "1", "b", "2", "a", "3")
	produceTo(t, cl, topic, 2, "c", "4", "c", "")

	got, ends := readTopic(t, e.Addr(), topic, nil)
	checkRead(t, got, map[int32][]string{0: {"a=1", "b=2", "a=3"}, 2: {"c=4", "c="}})
	if want := map[int32]int64{0: 3, 1: 0, 2: 2}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}

	// From the ends returned: nothing new, nothing read.
	got, _ = readTopic(t, e.Addr(), topic, ends)
	checkRead(t, got, map[int32][]string{})

	// Partition 0 from offset 2, partition 2 from its start (not given),
	// partition 1 from an offset past its end.
	produceTo(t, cl, topic, 1, "d", "5")
	got, ends = readTopic(t, e.Addr(), topic, map[int32]int64{0: 2, 1: 7})
	checkRead(t, got, map[int32][]string{0: {"a=3"}, 2: {"c=4", "c="}})
	if want := map[int32]int64{0: 3, 1: 1, 2: 2}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}
}

// TestReadToEndStopsAtItsStartEnd: records produced while the read runs
// are not read, and the read still ends.
func TestReadToEndStopsAtItsStartEnd(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-to-end-moving"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 2})
	cl := manualProducer(t, e.Addr())
	produceTo(t, cl, topic, 0, "a", "1", "b", "2")
	produceTo(t, cl, topic, 1, "c", "3")

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	got := map[int32][]string{}
	produced := false
	ends, err := ReadToEnd(ctx, readOpts(t, e.Addr()), topic, nil, func(r *kgo.Record) error {
		if !produced { // the end offsets are taken by now
			produced = true
			produceTo(t, cl, topic, 0, "late", "x")
			produceTo(t, cl, topic, 1, "late", "y")
		}
		got[r.Partition] = append(got[r.Partition], string(r.Key)+"="+string(r.Value))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadToEnd: %v", err)
	}
	checkRead(t, got, map[int32][]string{0: {"a=1", "b=2"}, 1: {"c=3"}})
	if want := map[int32]int64{0: 2, 1: 1}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}
}

// TestReadToEndCompactedAndDeleted: offsets removed by compaction (an
// expired tombstone, superseded records) and by a deletion that moved the
// log start are skipped; a partition whose records were all deleted is
// not waited for.
func TestReadToEndCompactedAndDeleted(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-to-end-gaps"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 3, Configs: map[string]string{"delete.retention.ms": "0"}})
	cl := manualProducer(t, e.Addr())
	produceTo(t, cl, topic, 0, "a", "1", "b", "2", "a", "", "b", "3", "c", "4")
	produceTo(t, cl, topic, 1, "d", "5", "e", "6", "f", "7")
	produceTo(t, cl, topic, 2, "g", "8", "h", "9")
	e.Cluster().Compact()

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: topic, Partition: 1, At: 1})
	del.Add(kadm.Offset{Topic: topic, Partition: 2, At: 2})
	res, err := newAdmin(t, e.Addr()).DeleteRecords(ctx, del)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}

	// Partition 0 keeps b=3 (offset 3) and its last batch c=4: offsets 0
	// to 2 are gone. Partition 1 starts at 1, even when asked for 0.
	got, ends := readTopic(t, e.Addr(), topic, map[int32]int64{1: 0})
	checkRead(t, got, map[int32][]string{0: {"b=3", "c=4"}, 1: {"e=6", "f=7"}})
	if want := map[int32]int64{0: 5, 1: 3, 2: 2}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}
}

// TestOffsetSpan: the offsets from each partition's log start to its end,
// summed: records deleted from the start (DeleteRecords) are not counted,
// an empty partition counts nothing, a missing topic is an error naming it.
func TestOffsetSpan(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "offset-span"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 3})
	cl := manualProducer(t, e.Addr())
	produceTo(t, cl, topic, 0, "a", "1", "b", "2", "a", "")
	produceTo(t, cl, topic, 1, "c", "3", "d", "4", "e", "5", "f", "6")
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: topic, Partition: 1, At: 3})
	res, err := newAdmin(t, e.Addr()).DeleteRecords(ctx, del)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	n, err := OffsetSpan(ctx, readOpts(t, e.Addr()), topic)
	if err != nil {
		t.Fatalf("OffsetSpan: %v", err)
	}
	if n != 3+1 {
		t.Errorf("got %d, want 4 (partition 0: offsets 0 to 2; partition 1: 3; partition 2: none)", n)
	}
	if _, err := OffsetSpan(ctx, readOpts(t, e.Addr()), "no-such-topic"); err == nil || !strings.Contains(err.Error(), "no-such-topic") {
		t.Errorf("missing topic: got %v, want an error naming no-such-topic", err)
	}
}

// TestReadToEndTransactions: a transactional producer's topic ends with a
// commit marker, an offset without a record; the read reaches it, passes
// no marker to fn, and skips an aborted transaction's records.
func TestReadToEndTransactions(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-to-end-txn"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1})
	cl := manualProducer(t, e.Addr(), kgo.TransactionalID("read-test"))
	txn := func(commit kgo.TransactionEndTry, kvs ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatalf("begin transaction: %v", err)
		}
		produceTo(t, cl, topic, 0, kvs...)
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatalf("end transaction: %v", err)
		}
	}
	txn(kgo.TryCommit, "a", "1", "b", "2")
	txn(kgo.TryAbort, "a", "gone")
	txn(kgo.TryCommit, "c", "3")

	got, ends := readTopic(t, e.Addr(), topic, nil)
	checkRead(t, got, map[int32][]string{0: {"a=1", "b=2", "c=3"}})
	// 2 + marker, 1 + marker, 1 + marker.
	if want := map[int32]int64{0: 7}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}
}

// TestReadToEndStops: fn's error is returned as is and ends the read; an
// ended context ends it with the context's error; a missing topic is an
// error naming it.
func TestReadToEndStops(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-to-end-stops"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1})
	produceTo(t, manualProducer(t, e.Addr()), topic, 0, "a", "1", "b", "2")
	opts := readOpts(t, e.Addr())

	stop := errors.New("enough")
	calls := 0
	_, err := ReadToEnd(t.Context(), opts, topic, nil, func(*kgo.Record) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn failing: got %v after %d calls, want %v after 1", err, calls, stop)
	}

	ctx, cancel := context.WithCancel(t.Context())
	_, err = ReadToEnd(ctx, opts, topic, nil, func(*kgo.Record) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("context canceled during the read: got %v, want context.Canceled", err)
	}

	_, err = ReadToEnd(t.Context(), opts, "no-such-topic", nil, func(*kgo.Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "no-such-topic") {
		t.Errorf("missing topic: got %v, want an error naming no-such-topic", err)
	}
}

// TestEndOffsets: the end offset of every partition, empty ones as 0.
func TestEndOffsets(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "end-offsets"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 2})
	produceTo(t, manualProducer(t, e.Addr()), topic, 1, "a", "1", "a", "2")
	ends, err := EndOffsets(t.Context(), newAdmin(t, e.Addr()), topic)
	if err != nil {
		t.Fatalf("EndOffsets: %v", err)
	}
	if want := map[int32]int64{0: 0, 1: 2}; !maps.Equal(ends, want) {
		t.Errorf("got %v, want %v", ends, want)
	}
}

// TestReadToEndCompactedTail: on Kafka, compaction can remove every record
// from some offset to a partition's end, leaving the consumer nothing to
// read while its end offset stays; kfake never compacts a partition's last
// batch, so the broker is made to answer as Kafka would: an end offset of
// 5 over 3 records, and no batch from offset 3 on. The read ends with the
// 3 records, once it has asked the partition directly.
func TestReadToEndCompactedTail(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic, end = "read-to-end-compacted-tail", 5
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1})
	produceTo(t, manualProducer(t, e.Addr()), topic, 0, "a", "1", "b", "2", "c", "3")

	c := e.Cluster()
	c.ControlKey(kmsg.ListOffsets.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ListOffsetsRequest)
		if len(req.Topics) != 1 || req.Topics[0].Topic != topic || req.Topics[0].Partitions[0].Timestamp != -1 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		rt := kmsg.NewListOffsetsResponseTopic()
		rt.Topic = topic
		for _, p := range req.Topics[0].Partitions {
			rp := kmsg.NewListOffsetsResponseTopicPartition()
			rp.Partition, rp.Offset, rp.Timestamp = p.Partition, end, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	var probes atomic.Int32 // counted on the broker's goroutine
	c.ControlKey(kmsg.Fetch.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.FetchRequest)
		if req.MaxWaitMillis != 0 || len(req.Topics) != 1 || len(req.Topics[0].Partitions) != 1 || req.Topics[0].Partitions[0].FetchOffset < 3 {
			return nil, nil, false // the consumer's fetches: kfake answers
		}
		probes.Add(1)
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic, rt.TopicID = req.Topics[0].Topic, req.Topics[0].TopicID
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition, rp.HighWatermark, rp.LastStableOffset = req.Topics[0].Partitions[0].Partition, end, end
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})

	got, ends := readTopic(t, e.Addr(), topic, nil)
	checkRead(t, got, map[int32][]string{0: {"a=1", "b=2", "c=3"}})
	if want := map[int32]int64{0: end}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}
	if probes.Load() == 0 {
		t.Errorf("the partition was never asked directly")
	}
}

// TestReadNewest: the newest record of each partition, in partition
// order, a tombstone included; an empty partition and one whose records
// were all deleted have none; a later call sees what was produced since.
func TestReadNewest(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-newest"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 4})
	cl := manualProducer(t, e.Addr())
	produceTo(t, cl, topic, 0, "a", "1", "b", "2", "a", "3")
	produceTo(t, cl, topic, 2, "c", "4", "c", "")
	produceTo(t, cl, topic, 3, "d", "5")
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: topic, Partition: 3, At: 1})
	res, err := newAdmin(t, e.Addr()).DeleteRecords(ctx, del)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}

	newest := func() []string {
		t.Helper()
		recs, err := ReadNewest(ctx, readOpts(t, e.Addr()), topic)
		if err != nil {
			t.Fatalf("ReadNewest: %v", err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%d@%d:%s=%s", r.Partition, r.Offset, r.Key, r.Value))
		}
		return got
	}
	if got, want := newest(), []string{"0@2:a=3", "2@1:c="}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	produceTo(t, cl, topic, 1, "e", "6")
	if got, want := newest(), []string{"0@2:a=3", "1@0:e=6", "2@1:c="}; !slices.Equal(got, want) {
		t.Errorf("after producing to partition 1: got %q, want %q", got, want)
	}

	if _, err := ReadNewest(ctx, readOpts(t, e.Addr()), "no-such-topic"); err == nil || !strings.Contains(err.Error(), "no-such-topic") {
		t.Errorf("missing topic: got %v, want an error naming no-such-topic", err)
	}
}

// TestReadNewestTransactionMarker: a partition whose last offset is a
// transaction's commit marker has no newest record (as documented), and
// the read still ends.
func TestReadNewestTransactionMarker(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "read-newest-txn"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1})
	cl := manualProducer(t, e.Addr(), kgo.TransactionalID("read-newest-test"))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	produceTo(t, cl, topic, 0, "a", "1")
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("end transaction: %v", err)
	}
	recs, err := ReadNewest(ctx, readOpts(t, e.Addr()), topic)
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadNewest: got %d records, %v; want none", len(recs), err)
	}
}

// TestReadToEndGapBeforeItsEnd: when compaction removed the records just
// before a partition's end and a producer keeps writing, the first record
// the consumer gets is past the end: the partition is done then and
// there. It used to stay "left" while records kept coming, so the read
// only ended once the producer paused long enough for a probe.
func TestReadToEndGapBeforeItsEnd(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic, end = "read-to-end-gap", 4
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1, Configs: map[string]string{"delete.retention.ms": "0"}})
	cl := manualProducer(t, e.Addr())
	// c=3 and its tombstone (offsets 2, 3) are compacted away; d=4 at
	// offset 4 stays as the last batch.
	produceTo(t, cl, topic, 0, "a", "1", "b", "2", "c", "3", "c", "", "d", "4")
	e.Cluster().Compact()

	// The end the read sees is 4, as if d=4 came after the call began.
	c := e.Cluster()
	c.ControlKey(kmsg.ListOffsets.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ListOffsetsRequest)
		if len(req.Topics) != 1 || req.Topics[0].Topic != topic || req.Topics[0].Partitions[0].Timestamp != -1 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		rt := kmsg.NewListOffsetsResponseTopic()
		rt.Topic = topic
		for _, p := range req.Topics[0].Partitions {
			rp := kmsg.NewListOffsetsResponseTopicPartition()
			rp.Partition, rp.Offset, rp.Timestamp = p.Partition, end, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	var probes atomic.Int32 // counted on the broker's goroutine
	c.ControlKey(kmsg.Fetch.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if kr.(*kmsg.FetchRequest).MaxWaitMillis == 0 {
			probes.Add(1)
		}
		return nil, nil, false
	})

	// A producer that keeps writing, every 50 ms, until the read is over
	// (at most 600 records, 30 s).
	pctx, stopProducing := context.WithCancel(t.Context())
	var producing sync.WaitGroup
	var produceErr atomic.Value
	producing.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range 600 {
			r := &kgo.Record{Topic: topic, Partition: 0, Key: []byte("e"), Value: []byte("5")}
			if err := cl.ProduceSync(pctx, r).FirstErr(); err != nil {
				if pctx.Err() == nil {
					produceErr.Store(err)
				}
				return
			}
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	got, ends := readTopic(t, e.Addr(), topic, nil)
	stopProducing()
	producing.Wait()
	if err := produceErr.Load(); err != nil {
		t.Fatalf("produce while reading: %v", err)
	}
	checkRead(t, got, map[int32][]string{0: {"a=1", "b=2"}})
	if want := map[int32]int64{0: end}; !maps.Equal(ends, want) {
		t.Errorf("end offsets: got %v, want %v", ends, want)
	}
	if n := probes.Load(); n != 0 {
		t.Errorf("the read probed the partition %d times: it did not see that offset 4 is past its end", n)
	}
}
