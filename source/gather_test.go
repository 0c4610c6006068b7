package source

import (
	"net"
	"testing"
	"time"
)

// fakeMark records the low-water marks a gather sets, failing from the
// failAt-th call on (0: never).
type fakeMark struct {
	marks  []int
	failAt int
}

func (f *fakeMark) set(_ net.Conn, n int) bool {
	if f.failAt > 0 && len(f.marks)+1 >= f.failAt {
		return false
	}
	f.marks = append(f.marks, n)
	return true
}

func newFakeGather(f *fakeMark) gather {
	return gather{set: f.set, usable: true}
}

func TestGatherOnWhileMessagesArrive(t *testing.T) {
	f := &fakeMark{}
	g := newFakeGather(f)
	now := time.Unix(1000, 0)
	until := now.Add(time.Second)
	if got := g.bound(now, until); !got.Equal(until) {
		t.Fatalf("before any message: bound %v, want %v", got.Sub(now), until.Sub(now))
	}
	g.received()
	if len(f.marks) != 1 || f.marks[0] != gatherBytes {
		t.Fatalf("first message: marks %v, want [%d]", f.marks, gatherBytes)
	}
	if got := g.bound(now, until); !got.Equal(now.Add(gatherWait)) {
		t.Fatalf("gathering: bound %v, want %v", got.Sub(now), gatherWait)
	}
	if got := g.bound(now, now.Add(time.Millisecond)); !got.Equal(now.Add(time.Millisecond)) {
		t.Fatalf("gathering, an earlier until: bound %v, want 1ms", got.Sub(now))
	}
	// A wait that ends after messages, then one with nothing: still on.
	g.received()
	g.timedOut()
	g.timedOut()
	if !g.on || len(f.marks) != 1 {
		t.Fatalf("one empty wait: on %v, marks %v; want on, one mark", g.on, f.marks)
	}
	// A message resets the count of empty waits.
	g.received()
	g.timedOut()
	g.timedOut()
	if !g.on {
		t.Fatal("a message between: gathering stopped after one empty wait")
	}
	// Two empty waits in a row: idle, the mark back to one byte.
	g.timedOut()
	if g.on || len(f.marks) != 2 || f.marks[1] != 1 {
		t.Fatalf("two empty waits: on %v, marks %v; want off, [%d 1]", g.on, f.marks, gatherBytes)
	}
	if got := g.bound(now, until); !got.Equal(until) {
		t.Fatalf("idle: bound %v, want %v", got.Sub(now), until.Sub(now))
	}
	g.timedOut() // an idle wait ends: nothing to do
	if len(f.marks) != 2 {
		t.Fatalf("idle timeout set a mark: %v", f.marks)
	}
	g.received()
	if !g.on || len(f.marks) != 3 || f.marks[2] != gatherBytes {
		t.Fatalf("message after idle: on %v, marks %v", g.on, f.marks)
	}
}

func TestGatherMarkNotSettable(t *testing.T) {
	f := &fakeMark{failAt: 1}
	g := newFakeGather(f)
	now := time.Unix(1000, 0)
	until := now.Add(time.Second)
	g.received()
	g.received()
	if g.on || g.usable {
		t.Fatalf("mark refused: on %v usable %v, want neither", g.on, g.usable)
	}
	if got := g.bound(now, until); !got.Equal(until) {
		t.Fatalf("mark refused: bound %v, want %v", got.Sub(now), until.Sub(now))
	}
}

func TestGatherMarkNotLowered(t *testing.T) {
	f := &fakeMark{failAt: 2}
	g := newFakeGather(f)
	now := time.Unix(1000, 0)
	g.received()
	g.timedOut()
	g.timedOut()
	// The mark stays high: every receive must stay bounded, or a small
	// transaction would wait for the status interval.
	if !g.on {
		t.Fatal("mark not lowered, but the receives are no longer bounded")
	}
	if got := g.bound(now, now.Add(time.Second)); !got.Equal(now.Add(gatherWait)) {
		t.Fatalf("mark not lowered: bound %v, want %v", got.Sub(now), gatherWait)
	}
	g.received()
	if len(f.marks) != 1 {
		t.Fatalf("marks %v after the failure, want only the first", f.marks)
	}
}

func TestGatherZeroValue(t *testing.T) {
	var g gather // a reader that was never started
	now := time.Unix(1000, 0)
	g.received()
	g.timedOut()
	if got := g.bound(now, now.Add(time.Second)); !got.Equal(now.Add(time.Second)) {
		t.Fatalf("zero gather bounds the receive: %v", got.Sub(now))
	}
}

func TestGatherStopLowersMark(t *testing.T) {
	f := &fakeMark{}
	g := newFakeGather(f)
	g.stop() // not gathering: nothing to lower
	if len(f.marks) != 0 {
		t.Fatalf("stop before gathering set %v", f.marks)
	}
	g.received()
	g.stop()
	if g.on || len(f.marks) != 2 || f.marks[1] != 1 {
		t.Fatalf("stop while gathering: on %v, marks %v; want off, [%d 1]", g.on, f.marks, gatherBytes)
	}
}
