package pipeline

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
)

// spill is the key states of a topic spread over bucket files in a
// directory by key hash: a key's records all land in one file, in the
// order added. Reading it back (each) holds one file's keys in memory at
// a time, and splits a file larger than maxBytes first, so memory is
// bounded by maxBytes whatever the number of keys. Not safe for
// concurrent use.
type spill struct {
	dir      string
	maxBytes int64
	top      *bucketSet // the files add writes to; closed by each
	files    int        // bucket files made so far, to name the next

	// For tests: the bucket files split again, and the most keys held in
	// memory at once.
	splits, peakKeys int
}

// newSpill makes a spill of buckets files in dir (an empty directory of
// its own) whose read holds at most maxBytes of a file in memory.
func newSpill(dir string, buckets int, maxBytes int64) (*spill, error) {
	s := &spill{dir: dir, maxBytes: maxBytes}
	top, err := s.newSet(buckets)
	if err != nil {
		return nil, err
	}
	s.top = top
	return s, nil
}

func (s *spill) add(key []byte, state byte) error { return s.top.add(key, state) }

// each calls fn with every orphan key: live before since, no record since.
// The key is fn's to keep (a tombstone holds it until produced). Each
// bucket file is removed once read, so the disk a spill takes shrinks as
// it goes (a split takes its file's size again meanwhile).
func (s *spill) each(fn func(key []byte) error) error {
	set := s.top
	s.top = nil
	if err := set.close(); err != nil {
		return err
	}
	for i, path := range set.paths {
		if err := s.drain(path, set.sizes[i], true, fn); err != nil {
			return err
		}
	}
	return nil
}

// drain calls fn with the orphans of the bucket file at path, of size
// bytes, and removes it: it holds the file's keys in memory, unless the
// file is larger than maxBytes and splittable, when it splits it first.
func (s *spill) drain(path string, size int64, splittable bool, fn func(key []byte) error) error {
	if splittable && size > s.maxBytes {
		return s.split(path, size, fn)
	}
	states := map[string]byte{}
	err := readSpill(path, func(key []byte, state byte) error {
		// spillSince sticks: a key with a record since is no orphan,
		// whatever its records after that say.
		if states[string(key)] != spillSince {
			states[string(key)] = state
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.peakKeys = max(s.peakKeys, len(states))
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	for k, state := range states {
		if state == spillLive {
			if err := fn([]byte(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// split spreads the bucket file at path, of size bytes, over new files by
// another hash seed, each about half maxBytes (at most maxSpillFiles),
// removes it, and drains them.
func (s *spill) split(path string, size int64, fn func(key []byte) error) error {
	set, err := s.newSet(int(min(max(2*size/s.maxBytes+1, 2), maxSpillFiles)))
	if err != nil {
		return err
	}
	err = readSpill(path, set.add)
	if err = errors.Join(err, set.close()); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	s.splits++
	for i, p := range set.paths {
		// A file that got all of its parent's bytes holds keys that hash
		// alike with two seeds: in practice one key, written many times
		// (a topic not compacted). Splitting it again would not shrink
		// it, and its keys, one or a few, are held in memory as they are.
		if err := s.drain(p, set.sizes[i], set.sizes[i] < size, fn); err != nil {
			return err
		}
	}
	return nil
}

// close closes the files still open, after an error; the caller removes
// the directory.
func (s *spill) close() {
	if s.top != nil {
		_ = s.top.close() // given up: the directory is removed
		s.top = nil
	}
}

// bucketSet is bucket files written by key hash with a seed of their own.
type bucketSet struct {
	seed  maphash.Seed
	paths []string
	files []*os.File
	bufs  []*bufio.Writer
	sizes []int64 // bytes written to each
}

// newSet creates n new bucket files in the spill's directory.
func (s *spill) newSet(n int) (*bucketSet, error) {
	b := &bucketSet{seed: maphash.MakeSeed()}
	for range n {
		path := filepath.Join(s.dir, fmt.Sprintf("bucket-%d", s.files))
		s.files++
		f, err := os.Create(path)
		if err != nil {
			_ = b.close() // the create's error is the one to report
			return nil, fmt.Errorf("spill file: %w", err)
		}
		b.paths = append(b.paths, path)
		b.files = append(b.files, f)
		b.bufs = append(b.bufs, bufio.NewWriter(f))
		b.sizes = append(b.sizes, 0)
	}
	return b, nil
}

// add writes a key's state to its bucket: the key's length (uvarint),
// the key, the state byte.
func (b *bucketSet) add(key []byte, state byte) error {
	i := maphash.Bytes(b.seed, key) % uint64(len(b.bufs))
	w := b.bufs[i]
	var n [binary.MaxVarintLen64]byte
	l := binary.PutUvarint(n[:], uint64(len(key)))
	if _, err := w.Write(n[:l]); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	if _, err := w.Write(key); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	if err := w.WriteByte(state); err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	b.sizes[i] += int64(l + len(key) + 1)
	return nil
}

// close flushes and closes every file, and returns the first error.
func (b *bucketSet) close() error {
	var first error
	for i, f := range b.files {
		if err := b.bufs[i].Flush(); err != nil && first == nil {
			first = fmt.Errorf("spill: %w", err)
		}
		if err := f.Close(); err != nil && first == nil {
			first = fmt.Errorf("spill: %w", err)
		}
	}
	b.files, b.bufs = nil, nil
	return first
}

// readSpill calls fn with each key and state of the bucket file at path,
// in the order written. The key is fn's only until it returns.
func readSpill(path string, fn func(key []byte, state byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read spill: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var buf []byte
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read spill %s: %w", path, err)
		}
		if uint64(cap(buf)) < n+1 {
			buf = make([]byte, n+1)
		}
		rec := buf[:n+1]
		if _, err := io.ReadFull(r, rec); err != nil {
			return fmt.Errorf("read spill %s: %w", path, err)
		}
		if err := fn(rec[:n], rec[n]); err != nil {
			return err
		}
	}
}
