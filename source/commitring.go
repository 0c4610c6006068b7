package source

// commitRingSize is how many of the latest transactions the stream
// remembers (commitRing): a transaction a chunk's snapshot missed commits
// a moment before the chunk's low watermark (it is still being made
// visible when the snapshot is taken, right after), so it is among the
// latest few.
const commitRingSize = 1 << 16

// commitRing is the xids of the latest transactions the stream read that
// changed a configured table, for a republish to tell whether a
// transaction its chunk's snapshot saw as in progress had in fact
// committed before the chunk's low watermark: the window copies the ring
// at its low watermark (before), when every xid in it committed before
// it. Stream goroutine only; the zero value is empty.
type commitRing struct {
	xids []uint32
	next int // where the next commit goes
}

// add remembers the commit of transaction xid.
func (r *commitRing) add(xid uint32) {
	if r.xids == nil {
		r.xids = make([]uint32, commitRingSize)
	}
	r.xids[r.next] = xid
	r.next = (r.next + 1) % commitRingSize
}

// before returns a copy of the ring: the transactions committed before
// now, among the latest.
func (r *commitRing) before() []uint32 {
	return append([]uint32(nil), r.xids...)
}

// committedAmong reports whether any of xids is in before (a copy of the
// ring). A xid's low 32 bits are unique among the transactions of the
// ring (far fewer than 2^32 apart); xid 0, which the ring's unfilled
// entries hold, is no transaction's.
func committedAmong(xids, before []uint32) bool {
	if len(xids) == 0 || len(before) == 0 {
		return false
	}
	set := make(map[uint32]struct{}, len(xids))
	for _, x := range xids {
		set[x] = struct{}{}
	}
	for _, x := range before {
		if _, ok := set[x]; ok && x != 0 {
			return true
		}
	}
	return false
}
