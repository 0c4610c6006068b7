package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// EndOffsets returns, per partition of topic, the offset after the last
// record a read_committed consumer can read now: the last stable offset,
// which is the high watermark when no transaction is open (replicator's
// producers are not transactional, so for its topics it is the number of
// records ever written to the partition). A topic that does not exist is
// an error.
func EndOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	return listOffsets(ctx, adm.ListCommittedOffsets, topic, "end")
}

// StartOffsets returns, per partition of topic, its log start offset: the
// first offset a consumer can still read (records before it were deleted
// by retention or DeleteRecords; compaction may also have removed offsets
// after it). A topic that does not exist is an error.
func StartOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	return listOffsets(ctx, adm.ListStartOffsets, topic, "start")
}

func listOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic, which string) (map[int32]int64, error) {
	listed, err := list(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list %s offsets of topic %s: %w", which, topic, err)
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// ReadToEnd reads topic from the start of each partition to the end it
// had when the call began, and calls fn with each record in offset order
// within its partition (partitions interleave). It returns the end offsets
// it read to, per partition, from which a later read may continue.
//
// from, when not nil, gives the offset to start a partition at (the next
// offset to read, as a consumer commits it); a partition it lacks starts
// at its log start offset, and an offset before the log start starts
// there. A partition with nothing between its start and its end is not
// read at all.
//
// It reads with a client of its own, built from opts (connection options
// such as [Config.ClientOptions] returns; no consumer or producer
// options), closed before it returns, so it may run beside a producer of
// the same topic: records produced after the call began are not read. It
// reads committed records only (isolation read_committed) and skips the
// markers of transactions, so a transactional producer's topics end where
// a consumer's would; offsets a compaction removed are skipped, up to the
// end included (see probeEnds). fn is called from the calling goroutine
// and may keep the record. Reading stops at the first error fn returns,
// which ReadToEnd returns as is, or when ctx ends.
func ReadToEnd(ctx context.Context, opts []kgo.Opt, topic string, from map[int32]int64, fn func(*kgo.Record) error) (map[int32]int64, error) {
	starts, ends, err := startsAndEnds(ctx, opts, topic)
	if err != nil {
		return nil, err
	}
	// Partitions to read: where they start and the offset they read to.
	at := map[int32]int64{}
	for p := range ends {
		at[p] = starts[p]
		if o, ok := from[p]; ok && o > at[p] {
			at[p] = o
		}
	}
	if err := readRange(ctx, opts, topic, at, ends, fn); err != nil {
		return nil, err
	}
	return ends, nil
}

// OffsetSpan returns, summed over the partitions of topic, the offsets
// between each one's log start and its end (as [EndOffsets] gives it):
// the records a [ReadToEnd] begun now would read, or more where
// compaction removed some, or transaction markers took offsets. An upper
// bound to size by, not a count; it reads nothing. opts are connection
// options, as for ReadToEnd.
func OffsetSpan(ctx context.Context, opts []kgo.Opt, topic string) (int64, error) {
	starts, ends, err := startsAndEnds(ctx, opts, topic)
	if err != nil {
		return 0, err
	}
	var n int64
	for p, end := range ends {
		n += max(end-starts[p], 0)
	}
	return n, nil
}

// ReadNewest returns the newest record of every partition of topic that
// has one, in partition order: the record at the offset before the end
// EndOffsets gives when the call begins (compaction never removes a
// partition's newest record, Kafka keeping its active segment whole). It
// reads as [ReadToEnd] does, with a client of its own built from opts, so
// records produced after the call began are not returned, and the record
// is the caller's to keep. A partition whose last offset holds no record a
// read_committed consumer is given (a transaction's marker) is left out
// rather than searched further back: replicator's producers are not
// transactional.
func ReadNewest(ctx context.Context, opts []kgo.Opt, topic string) ([]*kgo.Record, error) {
	starts, ends, err := startsAndEnds(ctx, opts, topic)
	if err != nil {
		return nil, err
	}
	at := map[int32]int64{}
	for p, end := range ends {
		at[p] = max(starts[p], end-1)
	}
	newest := map[int32]*kgo.Record{}
	err = readRange(ctx, opts, topic, at, ends, func(r *kgo.Record) error {
		newest[r.Partition] = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*kgo.Record, 0, len(newest))
	for _, p := range slices.Sorted(maps.Keys(newest)) {
		out = append(out, newest[p])
	}
	return out, nil
}

// startsAndEnds lists the log start and end offsets of every partition of
// topic with a short-lived client built from opts.
func startsAndEnds(ctx context.Context, opts []kgo.Opt, topic string) (starts, ends map[int32]int64, err error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("client for topic %s: %w", topic, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if starts, err = StartOffsets(ctx, adm, topic); err != nil {
		return nil, nil, err
	}
	if ends, err = EndOffsets(ctx, adm, topic); err != nil {
		return nil, nil, err
	}
	return starts, ends, nil
}

// readRange reads every partition p of topic in ends from offset from[p]
// (an offset below the log start reads from there) up to ends[p], and
// calls fn with each record as [ReadToEnd] describes. A partition with
// nothing in its range is not read.
func readRange(ctx context.Context, opts []kgo.Opt, topic string, from, ends map[int32]int64, fn func(*kgo.Record) error) error {
	at := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, end := range ends {
		if start := from[p]; start < end {
			at[p] = kgo.NewOffset().At(start)
			left[p] = end
		}
	}
	if len(left) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: at}),
		// An offset below the log start (records deleted since the
		// start offsets were listed) resumes at the start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A transaction's commit marker takes an offset of its own, the
		// last one of a partition when the transaction was the last thing
		// written: kept, so that the read can see it has reached the end.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return fmt.Errorf("consumer of topic %s: %w", topic, err)
	}
	defer cl.Close()
	next := map[int32]int64{} // per partition, the offset after the last record seen
	for p, o := range at {
		next[p] = o.EpochOffset().Offset
	}
	for len(left) > 0 {
		// Poll for at most probeAfter: a partition whose records up to its
		// end were all removed by compaction gives the consumer nothing to
		// read, and only a direct look at the partition tells that apart
		// from records still on their way.
		pctx, cancel := context.WithTimeout(ctx, probeAfter)
		fs := cl.PollFetches(pctx)
		idle := pctx.Err() != nil && fs.NumRecords() == 0
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read topic %s to its end (%d partitions left): %w", topic, len(left), err)
		}
		if idle {
			if err := probeEnds(ctx, cl, topic, next, left); err != nil {
				return err
			}
			continue
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) || p >= 0 { // not the poll's own timeout
				ferr = errors.Join(ferr, fmt.Errorf("fetch partition %d: %w", p, err))
			}
		})
		if ferr != nil {
			return fmt.Errorf("read topic %s: %w", topic, ferr)
		}
		for it := fs.RecordIter(); !it.Done(); {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("read topic %s to its end (%d partitions left): %w", topic, len(left), err)
			}
			r := it.Next()
			end, ok := left[r.Partition]
			if !ok {
				continue // done: past the end this call reads to
			}
			if r.Offset >= end {
				// The first record past the end, with the offsets before
				// it removed by compaction: nothing is left to read. Left
				// waiting, the partition would end only at a probe, which
				// a producer writing more often than probeAfter defers
				// for as long as it writes.
				delete(left, r.Partition)
				continue
			}
			next[r.Partition] = r.Offset + 1
			if r.Offset+1 >= end {
				delete(left, r.Partition)
			}
			if r.Attrs.IsControl() {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// probeAfter is how long ReadToEnd polls without a record before it looks
// at the partitions left itself (probeEnds).
const probeAfter = 2 * time.Second

// probeEnds removes from left the partitions with nothing left to read
// before their end: on Kafka, compaction may remove every record from
// some offset to a partition's end (the segment rolled and its last
// records were tombstones older than delete.retention.ms), and the
// consumer then waits for records that will never come. It fetches each
// partition left at next[p], directly from its leader, as a consumer
// would: a partition is done when the broker has no batch from there up
// to the end, or only batches without a record to read (aborted,
// markers). A partition that still has records is left to the consumer,
// and any doubt (an error, a leader moving) leaves it for the next probe.
func probeEnds(ctx context.Context, cl *kgo.Client, topic string, next, left map[int32]int64) error {
	meta, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return fmt.Errorf("read topic %s: metadata: %w", topic, err)
	}
	td, ok := meta.Topics[topic]
	if !ok || td.Err != nil {
		return nil // the consumer reports what is wrong with the topic
	}
	for p, end := range left {
		pd, ok := td.Partitions[p]
		if !ok || pd.Err != nil {
			continue
		}
		if partitionDrained(ctx, cl, topic, td.ID, pd.Leader, p, next[p], end) {
			delete(left, p)
		}
	}
	return nil
}

// partitionDrained reports whether partition p of topic holds no record to
// read in [from, end), asking its leader; false when unsure.
func partitionDrained(ctx context.Context, cl *kgo.Client, topic string, id [16]byte, leader, p int32, from, end int64) bool {
	// A few rounds, each past what the last one found unreadable
	// (aborted records, markers): a fetch answers at most one response's
	// worth.
	for range 8 {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MinBytes = 1
		req.MaxBytes = 1 << 20
		req.IsolationLevel = 1
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, from, 1<<20
		rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil || resp.ErrorCode != 0 || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return false
		}
		part := &resp.Topics[0].Partitions[0]
		if part.ErrorCode != 0 || part.Partition != p {
			return false
		}
		if len(part.RecordBatches) == 0 {
			// Nothing from `from` on; the end was below the high
			// watermark when the read began.
			return part.HighWatermark >= end
		}
		fp, after := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			KeepControlRecords: true,
			Offset:             from,
			IsolationLevel:     kgo.ReadCommitted(),
			Topic:              topic,
			Partition:          p,
		}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return false
		}
		for _, r := range fp.Records {
			if r.Offset < end && !r.Attrs.IsControl() {
				return false // a record to read: the consumer will get it
			}
		}
		if after >= end {
			return true
		}
		if after <= from {
			return false
		}
		from = after
	}
	return false
}
