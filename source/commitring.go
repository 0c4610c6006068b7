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
// there committed before now), and a window copies it at its low
// watermark (every xid there then committed before it). Its slots are
// atomic: the reader reads while the stream writes. A nil ring is empty
// and takes nothing (a stream without a republisher, in tests).
type commitRing struct {
	xids []atomic.Uint32
	next int // where the next commit goes; the stream's
}

func newCommitRing() *commitRing { return &commitRing{xids: make([]atomic.Uint32, commitRingSize)} }

// add remembers the commit of transaction xid.
func (r *commitRing) add(xid uint32) {
	if r == nil {
		return
	}
	r.xids[r.next].Store(xid)
	r.next = (r.next + 1) % commitRingSize
}

// before returns a copy of the ring: the transactions committed before
// now, among the latest.
func (r *commitRing) before() []uint32 {
	if r == nil {
		return nil
	}
	out := make([]uint32, len(r.xids))
	for i := range r.xids {
		out[i] = r.xids[i].Load()
	}
	return out
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

// committedAmong reports whether any of xids is in before (a copy of the
// ring). A xid's low 32 bits are unique among the transactions of the
// ring (far fewer than 2^32 apart); xid 0, which the ring's unfilled
// entries hold, is no transaction's.
func committedAmong(xids, before []uint32) bool {
	if len(xids) == 0 || len(before) == 0 {
		return false
	}
	set := xidSet(xids)
	for _, x := range before {
		if _, ok := set[x]; ok {
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
