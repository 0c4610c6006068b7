package source

import "github.com/jackc/pglogrepl"

// commitRingSize is how many of the latest transactions the stream
// remembers (commitRing). A transaction a chunk's snapshot missed commits
// a moment before the chunk's low watermark (it is still being made
// visible when the snapshot is taken, milliseconds later), so it is among
// the latest few; this many cover any write rate the stream can follow.
const commitRingSize = 1 << 16

// commitRing is the xid and commit position of the latest transactions
// the stream read, for a republish to tell whether a transaction its
// chunk's snapshot saw as in progress had in fact committed before the
// chunk's low watermark (stream.handChunk). Stream goroutine only; the
// zero value is empty.
type commitRing struct {
	xids []uint32
	lsns []pglogrepl.LSN
	next int // where the next commit goes
}

// add remembers the commit of transaction xid at lsn.
func (r *commitRing) add(xid uint32, lsn pglogrepl.LSN) {
	if r.xids == nil {
		r.xids = make([]uint32, commitRingSize)
		r.lsns = make([]pglogrepl.LSN, commitRingSize)
	}
	r.xids[r.next], r.lsns[r.next] = xid, lsn
	r.next = (r.next + 1) % commitRingSize
}

// committedBefore reports whether any of xids is a transaction the ring
// saw commit before low. A xid's low 32 bits are unique among the
// transactions of the ring (far fewer than 2^32 apart); the entries the
// ring never filled have lsn 0, below any low watermark, and xid 0, which
// no transaction has.
func (r *commitRing) committedBefore(xids []uint32, low pglogrepl.LSN) bool {
	if len(xids) == 0 || r.xids == nil {
		return false
	}
	for i, x := range r.xids {
		if x != 0 && r.lsns[i] < low {
			for _, y := range xids {
				if x == y {
					return true
				}
			}
		}
	}
	return false
}
