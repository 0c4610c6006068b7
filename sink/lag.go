package sink

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// defaultDeleteRetention is Kafka's delete.retention.ms default (1 day),
// used when the broker does not report the topic's setting.
const defaultDeleteRetention = 24 * time.Hour

// Lag is a partition whose read model may have missed tombstones:
// compaction may have removed, since the read model last applied a batch,
// tombstones it never read, and the rows they deleted would stay in the
// read model forever.
type Lag struct {
	ReadModel string
	Topic     string
	Partition int32
	Stored    int64 // the stored next offset
	Start     int64 // the partition's log start offset
	End       int64 // the partition's end offset
	// Recent is the first offset of a record written within Retention
	// of now (End when none is): the records from Stored up to it are
	// older than that, and unread.
	Recent int64
	// ByCommit: the records' age could not be read (the ListOffsets by
	// time failed), and the time since the last commit stood for it.
	ByCommit  bool
	Away      time.Duration // since the read model last committed
	Retention time.Duration // the topic's delete.retention.ms
}

func (l Lag) String() string {
	why := fmt.Sprintf("%d unread record offset(s) (%d to %d) were written longer ago than the topic's delete.retention.ms (%s); its last batch was applied %s ago",
		l.Recent-l.Stored, l.Stored, l.Recent-1, l.Retention, l.Away.Round(time.Second))
	if l.ByCommit {
		why = fmt.Sprintf("its last batch was applied %s ago, longer than the topic's delete.retention.ms (%s), and %d record offset(s) are unread (their age could not be read)",
			l.Away.Round(time.Second), l.Retention, l.End-l.Stored)
	}
	if l.Stored < l.Start {
		why = fmt.Sprintf("its stored offset %d is before the partition's first offset %d", l.Stored, l.Start)
	}
	return fmt.Sprintf("read model %s may have missed tombstones on %s partition %d: %s; compaction may have removed deletes it never saw. Run `replicator rebuild --read-model %s` to rebuild it from the topics",
		l.ReadModel, l.Topic, l.Partition, why, l.ReadModel)
}

// CheckLag compares a read model's stored offsets with its topics: a
// partition lags when its stored offset is before the log start offset
// (records it never read are gone), or when records it has not read were
// written longer ago than the topic's delete.retention.ms (a tombstone
// among them may have been compacted away: Kafka keeps a tombstone that
// long at least, only once the segment holding it is cleaned). That holds
// for a read model stopped since, and for one running but that far
// behind. The age of the records is their timestamp, found with a
// ListOffsets by time; where that fails, the time since the read model's
// last commit stands for it.
func CheckLag(ctx context.Context, adm *kadm.Client, st *store, model string, topics []string, now time.Time) ([]Lag, error) {
	stored, err := st.loadOffsets(ctx, model)
	if err != nil {
		return nil, err
	}
	if len(stored) == 0 {
		return nil, nil // never ran: it will read everything
	}
	return missedTombstones(ctx, adm, stored, model, topics, now)
}

// missedTombstones is [CheckLag] on offsets already read.
func missedTombstones(ctx context.Context, adm *kadm.Client, stored map[tp]offsetRow, model string, topics []string, now time.Time) ([]Lag, error) {
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	retention := map[string]time.Duration{}
	if cfgs, err := adm.DescribeTopicConfigs(ctx, topics...); err == nil {
		for _, rc := range cfgs {
			for _, c := range rc.Configs {
				if c.Key == "delete.retention.ms" && c.Value != nil {
					if ms, err := strconv.ParseInt(*c.Value, 10, 64); err == nil {
						retention[rc.Name] = time.Duration(ms) * time.Millisecond
					}
				}
			}
		}
	}
	retentionOf := func(topic string) time.Duration {
		if r, ok := retention[topic]; ok {
			return r
		}
		return defaultDeleteRetention
	}
	// The first offset written within the retention, per partition: one
	// request per distinct retention (topics of one read model usually
	// share it).
	recent := map[tp]int64{}
	byRetention := map[time.Duration][]string{}
	for _, t := range topics {
		byRetention[retentionOf(t)] = append(byRetention[retentionOf(t)], t)
	}
	for ret, ts := range byRetention {
		after, err := adm.ListOffsetsAfterMilli(ctx, now.Add(-ret).UnixMilli(), ts...)
		if err != nil {
			continue // the time since the last commit stands for it
		}
		after.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				recent[tp{o.Topic, o.Partition}] = o.Offset
			}
		})
	}
	var out []Lag
	for k, o := range stored {
		start, ok1 := starts.Lookup(k.topic, k.part)
		end, ok2 := ends.Lookup(k.topic, k.part)
		if !ok1 || !ok2 || start.Err != nil || end.Err != nil {
			continue
		}
		l := Lag{ReadModel: model, Topic: k.topic, Partition: k.part, Stored: o.next, Start: start.Offset, End: end.Offset,
			Away: now.Sub(o.updatedAt), Retention: retentionOf(k.topic)}
		old := false
		if r, ok := recent[k]; ok {
			l.Recent = r
			old = o.next < r
		} else {
			l.Recent, l.ByCommit = end.Offset, true
			old = o.next < end.Offset && l.Away > l.Retention
		}
		if o.next < start.Offset || old {
			out = append(out, l)
		}
	}
	return out, nil
}
