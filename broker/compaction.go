package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultCompactionMinDirtyBytes is the growth of the compacted topics
// that makes a compaction pass due (see [EmbeddedConfig]).
//
// Why so much: kfake compacts stop-the-world. A pass runs on the broker's
// only request loop, reads every batch of every compacted partition back
// from disk and holds the surviving ones in memory while it rewrites the
// segments, so it stalls every produce for a time, and grows the process
// by a memory, proportional to the whole log, not to what is new. With
// the old fixed 30 s interval the passes came ever longer as the topics
// grew: a 10,000 rows/s load saw its p99 latency go from 5 ms to about
// 1 s, and a 5M-row transaction peaked at ~670 MB RSS
// (docs/BENCHMARKS.md, "What the profiles showed"). Compacting only when the topics have grown
// by at least this much, and by at least what the last pass left (Kafka's
// min.cleanable.dirty.ratio of 0.5), makes passes rare and their cost
// proportional to what was written since. Kafka itself never cleans a
// partition's active segment, 1 GiB by default, so a real broker also
// leaves small topics uncompacted.
const DefaultCompactionMinDirtyBytes = 256 << 20

// kfakeCleanerOff is the cleaner interval given to kfake, whose own ticker
// would compact on a fixed schedule: a year, i.e. never in practice; the
// compactor below decides instead.
const kfakeCleanerOff = 365 * 24 * time.Hour

// compactor runs kfake's compaction when it is due. It is owned by an
// [Embedded]: run until its context ends, and Close waits for it before
// closing the cluster (whose methods block forever once closed).
type compactor struct {
	cluster  *kfake.Cluster
	addr     string
	interval time.Duration
	minDirty int64
	log      *slog.Logger // nil: no log
	// clientOpts authenticate the compactor's client (SASL).
	clientOpts []kgo.Opt

	adm *kadm.Client
	cl  *kgo.Client
	// clean is the size of the compacted topics after the last pass. Zero
	// at start: a restarted broker cannot know what its last pass left,
	// so it cleans once the log reaches minDirty.
	clean int64
}

// compactionDue reports whether a pass is worth running over compacted
// topics of total bytes, clean of which the last pass left.
func compactionDue(total, clean, minDirty int64) bool {
	dirty := total - clean
	return dirty >= minDirty && dirty >= clean
}

func (c *compactor) run(ctx context.Context) {
	defer c.close()
	every(ctx, c.interval, c.log, "compaction check failed", func() error {
		_, err := c.check(ctx)
		return err
	})
}

// every calls fn each interval until ctx ends. A failure is not fatal (the
// next tick tries again): it is logged as a warning, "embedded broker: "
// and what, unless log is nil or ctx has ended.
func every(ctx context.Context, interval time.Duration, log *slog.Logger, what string, fn func() error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(); err != nil && ctx.Err() == nil && log != nil {
				log.Warn("embedded broker: "+what, "error", err)
			}
		}
	}
}

// check runs a compaction pass if one is due and reports whether it did.
func (c *compactor) check(ctx context.Context) (bool, error) {
	total, err := c.compactedBytes(ctx)
	if err != nil {
		return false, err
	}
	if total < c.clean { // topics deleted
		c.clean = total
	}
	if !compactionDue(total, c.clean, c.minDirty) {
		return false, nil
	}
	start := time.Now()
	c.cluster.Compact()
	after, err := c.compactedBytes(ctx)
	if err != nil {
		return true, err
	}
	c.clean = after
	if c.log != nil {
		c.log.Info("embedded broker compacted its topics", "bytes_before", total, "bytes_after", after, "took", time.Since(start).Round(time.Millisecond))
	}
	return true, nil
}

// compactedBytes is the size of every partition of every topic with
// cleanup.policy compact.
func (c *compactor) compactedBytes(ctx context.Context) (int64, error) {
	if c.adm == nil {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.addr)}, c.clientOpts...)...)
		if err != nil {
			return 0, fmt.Errorf("admin client: %w", err)
		}
		c.cl, c.adm = cl, kadm.NewClient(cl)
	}
	topics, err := c.adm.ListTopics(ctx)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	var total int64
	for _, name := range topics.Names() {
		info := c.cluster.TopicInfo(name)
		if info == nil {
			continue // deleted since
		}
		if p := info.Configs["cleanup.policy"]; p == nil || !strings.Contains(*p, "compact") {
			continue
		}
		for _, pi := range c.cluster.PartitionInfos(name) {
			total += pi.NumBytes
		}
	}
	return total, nil
}

func (c *compactor) close() {
	if c.cl != nil {
		c.cl.Close()
	}
}
