package source

import "sync/atomic"

// commitRingSize is how many of the latest transactions the stream
// remembers (commitRing): a transaction a chunk's snapshot missed commits
// a moment before the chunk's low watermark (it is still being made
// visible when the snapshot is taken, right after), so it is among the
// latest few.
const commitRingSize = 1 << 16

// commitRing is the xids of the latest transactions the stream read that
// changed a configured table, for a republish to tell whether a
// transaction its chunk's snapshot saw as in progress had in fact
// committed before the chunk's low watermark. The stream adds to it; the
// republisher's reader looks in it as the snapshot is taken (any xid
// there committed before now), and a window notes the ring's count at its
// low watermark (the xids added before it committed before it). Its slots
// are atomic: the reader reads while the stream writes. A nil ring is
// empty and takes nothing (a stream without a republisher, in tests).
type commitRing struct {
	xids []atomic.Uint32
	n    uint64 // commits added so far; the stream's
}

func newCommitRing() *commitRing { return &commitRing{xids: make([]atomic.Uint32, commitRingSize)} }

// add remembers the commit of transaction xid.
func (r *commitRing) add(xid uint32) {
	if r == nil {
		return
	}
	r.xids[r.n%commitRingSize].Store(xid)
	r.n++
}

// count is how many commits were added so far: a window's mark at its low
// watermark, for committedBefore. Stream goroutine only.
func (r *commitRing) count() uint64 {
	if r == nil {
		return 0
	}
	return r.n
}

// committedBefore reports whether any of xids is among the commits added
// before the ring counted mark. When so many commits were added since
// that the ones before mark are overwritten, it cannot tell, and says
// true for any xid: the chunk is read again rather than trusted.
func (r *commitRing) committedBefore(xids []uint32, mark uint64) bool {
	if r == nil {
		return false
	}
	set := xidSet(xids)
	if len(set) == 0 {
		return false
	}
	if r.n-mark >= commitRingSize {
		return true
	}
	lo := uint64(0)
	if r.n > commitRingSize {
		lo = r.n - commitRingSize
	}
	for i := lo; i < mark; i++ {
		if _, ok := set[r.xids[i%commitRingSize].Load()]; ok {
			return true
		}
	}
	return false
}

// holdsAny reports whether any of xids is in the ring now.
func (r *commitRing) holdsAny(xids []uint32) bool {
	if r == nil || len(xids) == 0 {
		return false
	}
	set := xidSet(xids)
	for i := range r.xids {
		if _, ok := set[r.xids[i].Load()]; ok {
			return true
		}
	}
	return false
}

// xidSet is xids as a set, without 0.
func xidSet(xids []uint32) map[uint32]struct{} {
	set := make(map[uint32]struct{}, len(xids))
	for _, x := range xids {
		if x != 0 {
			set[x] = struct{}{}
		}
	}
	return set
}
