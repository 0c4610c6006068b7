package pipeline

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/source"
)

// recordReader reads a topic's records with their lsn header, to its end
// at the call (*TopicKeys).
type recordReader interface {
	EachRecord(ctx context.Context, topic string, fn func(key []byte, live bool, lsn []byte) error) error
}

// reconcileBuckets is how many files a reconcile spreads the topic's keys
// over: one file's keys are held in memory at a time.
const reconcileBuckets = 64

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
// to its end, spilling each record's key and state into files under the
// spill directory (one of reconcileBuckets in memory at a time), then
// produces the tombstones; c.Ack is called once all are durable. Records of
// later changes are produced after them.
func (p *Pipeline) Reconcile(ctx context.Context, c *source.Change, since pglogrepl.LSN) error {
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
	sp, err := newSpill(dir)
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
	all := &allAck{ack: c.Ack}
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

// spill is the key states of a topic spread over bucket files by key
// hash: a key's records all land in one file, in the order added.
type spill struct {
	seed  maphash.Seed
	files []*os.File
	bufs  []*bufio.Writer
}

func newSpill(dir string) (*spill, error) {
	s := &spill{seed: maphash.MakeSeed()}
	for i := range reconcileBuckets {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("bucket-%02d", i)))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("spill file: %w", err)
		}
		s.files = append(s.files, f)
		s.bufs = append(s.bufs, bufio.NewWriter(f))
	}
	return s, nil
}

func (s *spill) add(key []byte, state byte) error {
	w := s.bufs[maphash.Bytes(s.seed, key)%reconcileBuckets]
	var n [binary.MaxVarintLen64]byte
	if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))]); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	if _, err := w.Write(key); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	if err := w.WriteByte(state); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	return nil
}

// each calls fn with every orphan key: live before since, no record since.
func (s *spill) each(fn func(key []byte) error) error {
	for i, f := range s.files {
		if err := s.bufs[i].Flush(); err != nil {
			return fmt.Errorf("spill: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("spill: %w", err)
		}
		states := map[string]byte{}
		r := bufio.NewReader(f)
		for {
			n, err := binary.ReadUvarint(r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read spill: %w", err)
			}
			key := make([]byte, n+1)
			if _, err := io.ReadFull(r, key); err != nil {
				return fmt.Errorf("read spill: %w", err)
			}
			k, state := string(key[:n]), key[n]
			if states[k] != spillSince {
				states[k] = state
			}
		}
		for k, state := range states {
			if state == spillLive {
				if err := fn([]byte(k)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (s *spill) close() {
	for _, f := range s.files {
		f.Close()
	}
}
