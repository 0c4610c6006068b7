package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"os"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/source"
)

// recordReader reads a topic's records with their lsn header, to its end
// at the call, and bounds their number beforehand (*TopicKeys).
type recordReader interface {
	EachRecord(ctx context.Context, topic string, fn func(key []byte, live bool, lsn []byte) error) error
	// Records is at least the number of records EachRecord would read
	// now.
	Records(ctx context.Context, topic string) (int64, error)
}

// Spill sizing. A reconcile holds the keys of one bucket file in memory at
// a time, so what bounds its memory is the bucket's size, whatever the
// topic's.
const (
	// spillBucketRecords is the records per bucket file the first
	// spread aims at (spillBuckets): about the size bound below in keys
	// of 14 bytes (a Confluent header and a bigint key).
	spillBucketRecords = 1 << 19
	// maxSpillFiles bounds the bucket files written at once, each an open
	// file: a daemon has a limit on its open files (often 1024), and its
	// connections count against it too.
	maxSpillFiles = 128
	// defaultSpillBucketBytes is the largest bucket file whose keys are
	// held in memory: a larger one (more than spillBucketRecords a bucket
	// after maxSpillFiles buckets, or long keys) is split again. A key
	// spilled takes its bytes and 2, a key held its bytes and 35 to 80
	// bytes of map: a file of 8 MB of distinct keys of 6 bytes, the
	// shortest (a Confluent header and one byte), took 61 MB of heap,
	// of 20 bytes 22 MB, of 41 bytes 15 MB (go1.26).
	defaultSpillBucketBytes = 8 << 20
)

// spillBuckets is how many bucket files a reconcile first spreads a topic
// of about records records over: one per spillBucketRecords, at least 1,
// at most maxSpillFiles. Beyond maxSpillFiles*spillBucketRecords the
// buckets grow past the size bound, and are split when read (spill.each).
func spillBuckets(records int64) int {
	n := (max(records, 0) + spillBucketRecords - 1) / spillBucketRecords
	return int(min(max(n, 1), maxSpillFiles))
}

// WithSpillDir is where a reconcile spills the keys of a topic (a
// directory under data_dir); default the system's temporary directory.
func WithSpillDir(dir string) Option { return func(p *Pipeline) { p.spillDir = dir } }

// Key states in the spill files, per record in offset order.
const (
	spillGone  byte = iota // a tombstone from before since
	spillLive              // a record with a value from before since
	spillSince             // any record at or after since
)

// Reconcile publishes, at c's position in the stream, a tombstone for
// every key of c.Table's topic whose latest record is live and older than
// since, the start of a republish that has just published every row of
// the table: every key in the table then has a record at or after since
// (republished, or changed since), so a key without one is gone from the
// table, an orphan (a delete missed while a slot was lost, a record
// produced by hand). It waits for the records before it, reads the topic
// to its end, spilling each record's key and state into bucket files
// under the spill directory (spillBuckets of them, by the topic's offsets;
// a file past the size bound split again when read, so that one bucket's
// keys, at most about 8 MB of them, are in memory at a time), then
// produces the tombstones; c.Ack is called once all are durable. Records of
// later changes are produced after them.
func (p *Pipeline) Reconcile(ctx context.Context, c *source.Change, since pglogrepl.LSN) error {
	return p.reconcile(ctx, c, since, c.Ack)
}

// reconcile is Reconcile acknowledging through ack (see handle).
func (p *Pipeline) reconcile(ctx context.Context, c *source.Change, since pglogrepl.LSN, ack acker) error {
	if err := p.accepting(ctx); err != nil {
		return err
	}
	if c.TableIndex < 0 || c.TableIndex >= len(p.entities) {
		return fmt.Errorf("reconcile of table index %d: no such entity", c.TableIndex)
	}
	e := &p.entities[c.TableIndex]
	topic := e.Mapping.Topic()
	rr, ok := p.keys.(recordReader)
	if !ok {
		return fmt.Errorf("reconcile of %s: the pipeline cannot read topic %s", c.Table.QualifiedName(), topic)
	}
	if err := p.Flush(ctx); err != nil {
		return fmt.Errorf("reconcile of %s: wait for the records before it: %w", c.Table.QualifiedName(), err)
	}
	records, err := rr.Records(ctx, topic)
	if err != nil {
		return fmt.Errorf("reconcile of %s: size of topic %s: %w", c.Table.QualifiedName(), topic, err)
	}
	if p.spillDir != "" {
		if err := os.MkdirAll(p.spillDir, 0o750); err != nil {
			return fmt.Errorf("reconcile of %s: spill directory: %w", c.Table.QualifiedName(), err)
		}
	}
	dir, err := os.MkdirTemp(p.spillDir, "reconcile-*")
	if err != nil {
		return fmt.Errorf("reconcile of %s: spill directory: %w", c.Table.QualifiedName(), err)
	}
	defer os.RemoveAll(dir)
	sp, err := newSpill(dir, spillBuckets(records), cmp.Or(p.spillBytes, defaultSpillBucketBytes))
	if err != nil {
		return fmt.Errorf("reconcile of %s: %w", c.Table.QualifiedName(), err)
	}
	defer sp.close()
	err = rr.EachRecord(ctx, topic, func(key []byte, live bool, lsnText []byte) error {
		state := spillGone
		if live {
			state = spillLive
		}
		if lsn, err := pglogrepl.ParseLSN(string(lsnText)); err == nil && lsn >= since {
			state = spillSince
		}
		return sp.add(key, state)
	})
	if err != nil {
		return fmt.Errorf("reconcile of %s: read topic %s: %w", c.Table.QualifiedName(), topic, err)
	}
	headers := changeHeaders(&source.Change{Op: source.OpDelete, LSN: c.LSN, CommitTime: c.CommitTime, Republish: c.Republish})
	all := &allAck{ack: ack}
	all.left.Store(1)
	err = sp.each(func(key []byte) error {
		all.left.Add(1)
		p.produce(ctx, p.tombstone(e, key, headers), all)
		p.count(c.TableIndex, source.OpDelete, 1)
		return p.accepting(ctx)
	})
	if err != nil {
		return fmt.Errorf("reconcile of %s: %w", c.Table.QualifiedName(), err)
	}
	all.Done()
	return p.Err()
}
