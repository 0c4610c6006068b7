package source

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pglogrepl"
)

// cpFixture drives a checkpoint by name: transactions ("A", "B") and their
// changes ("a1", "a2").
type cpFixture struct {
	cp   *checkpoint
	txns map[string]*txnMark
	acks map[string]Ack
}

// cpStep is one action on the fixture, or an assertion.
type cpStep func(t *testing.T, f *cpFixture)

func begin(txn string) cpStep {
	return func(t *testing.T, f *cpFixture) { f.txns[txn] = f.cp.begin() }
}

func track(txn, change string) cpStep {
	return func(t *testing.T, f *cpFixture) { f.acks[change] = f.cp.track(f.txns[txn]) }
}

func ackDone(change string) cpStep {
	return func(t *testing.T, f *cpFixture) { f.acks[change].Done() }
}

func seal(txn string, end pglogrepl.LSN) cpStep {
	return func(t *testing.T, f *cpFixture) { f.cp.seal(f.txns[txn], end) }
}

func skipTo(lsn pglogrepl.LSN) cpStep {
	return func(t *testing.T, f *cpFixture) { f.cp.skipTo(lsn) }
}

// wantConfirmed asserts what advance returns, and how many transactions
// are still in flight after it.
func wantConfirmed(lsn pglogrepl.LSN, inFlight int) cpStep {
	return func(t *testing.T, f *cpFixture) {
		t.Helper()
		if got := f.cp.advance(); got != lsn {
			t.Errorf("advance: got %s, want %s", got, lsn)
		}
		if got := f.cp.inFlight(); got != inFlight {
			t.Errorf("inFlight: got %d, want %d", got, inFlight)
		}
	}
}

func TestCheckpoint(t *testing.T) {
	t.Parallel()
	const start = pglogrepl.LSN(10)
	tests := []struct {
		name  string
		steps []cpStep
	}{
		{
			name:  "nothing in flight confirms the start",
			steps: []cpStep{wantConfirmed(start, 0)},
		},
		{
			name: "empty transaction confirms its end once sealed",
			steps: []cpStep{
				begin("A"), wantConfirmed(start, 1),
				seal("A", 100), wantConfirmed(100, 0),
			},
		},
		{
			name: "unsealed transaction blocks even when acknowledged",
			steps: []cpStep{
				begin("A"), track("A", "a1"), ackDone("a1"), wantConfirmed(start, 1),
				seal("A", 100), wantConfirmed(100, 0),
			},
		},
		{
			name: "sealed transaction waits for its last ack",
			steps: []cpStep{
				begin("A"), track("A", "a1"), track("A", "a2"), seal("A", 100),
				ackDone("a2"), wantConfirmed(start, 1),
				ackDone("a1"), wantConfirmed(100, 0),
			},
		},
		{
			name: "ack count reaching zero mid-transaction does not finish it",
			steps: []cpStep{
				begin("A"), track("A", "a1"), ackDone("a1"),
				track("A", "a2"), seal("A", 100), wantConfirmed(start, 1),
				ackDone("a2"), wantConfirmed(100, 0),
			},
		},
		{
			name: "out-of-order acks across transactions confirm only the contiguous prefix",
			steps: []cpStep{
				begin("A"), track("A", "a1"), track("A", "a2"), seal("A", 100),
				begin("B"), track("B", "b1"), seal("B", 200),
				begin("C"), track("C", "c1"), seal("C", 300),
				ackDone("c1"), ackDone("b1"), wantConfirmed(start, 3),
				ackDone("a1"), wantConfirmed(start, 3),
				ackDone("a2"), wantConfirmed(300, 0),
			},
		},
		{
			name: "a gap in the middle stops the prefix there",
			steps: []cpStep{
				begin("A"), track("A", "a1"), seal("A", 100),
				begin("B"), track("B", "b1"), seal("B", 200),
				begin("C"), track("C", "c1"), seal("C", 300),
				ackDone("a1"), ackDone("c1"), wantConfirmed(100, 2),
				ackDone("b1"), wantConfirmed(300, 0),
			},
		},
		{
			name: "an open transaction behind a finished one waits",
			steps: []cpStep{
				begin("A"), track("A", "a1"), seal("A", 100), ackDone("a1"),
				begin("B"), track("B", "b1"), ackDone("b1"), wantConfirmed(100, 1),
				seal("B", 200), wantConfirmed(200, 0),
			},
		},
		{
			name: "empty transactions between others pass once reached, holding no slot",
			steps: []cpStep{
				begin("A"), track("A", "a1"), seal("A", 100),
				begin("B"), seal("B", 150),
				begin("C"), seal("C", 160), wantConfirmed(start, 1),
				begin("D"), track("D", "d1"), seal("D", 200),
				begin("E"), seal("E", 210), wantConfirmed(start, 2),
				ackDone("a1"), wantConfirmed(160, 1),
				ackDone("d1"), wantConfirmed(210, 0),
			},
		},
		{
			name: "an empty transaction behind an unsealed one waits in line",
			steps: []cpStep{
				begin("A"), track("A", "a1"),
				begin("B"), seal("B", 150), wantConfirmed(start, 2),
				ackDone("a1"), seal("A", 100), wantConfirmed(150, 0),
			},
		},
		{
			name: "skipTo when idle confirms the server position",
			steps: []cpStep{
				skipTo(500), wantConfirmed(500, 0),
			},
		},
		{
			name: "skipTo after everything was acknowledged",
			steps: []cpStep{
				begin("A"), track("A", "a1"), seal("A", 100), ackDone("a1"),
				skipTo(500), wantConfirmed(500, 0),
			},
		},
		{
			name: "skipTo is ignored while a change is unacknowledged",
			steps: []cpStep{
				begin("A"), track("A", "a1"), seal("A", 100),
				skipTo(500), wantConfirmed(start, 1),
				ackDone("a1"), wantConfirmed(100, 0),
			},
		},
		{
			name: "skipTo is ignored while a transaction is open",
			steps: []cpStep{
				begin("A"), skipTo(500), wantConfirmed(start, 1),
			},
		},
		{
			name: "skipTo never moves backwards",
			steps: []cpStep{
				begin("A"), seal("A", 300), wantConfirmed(300, 0),
				skipTo(200), wantConfirmed(300, 0),
			},
		},
		{
			name: "an end before the confirmed position does not move it back",
			steps: []cpStep{
				skipTo(500), begin("A"), seal("A", 400), wantConfirmed(500, 0),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &cpFixture{cp: newCheckpoint(start), txns: map[string]*txnMark{}, acks: map[string]Ack{}}
			for _, step := range tt.steps {
				step(t, f)
			}
		})
	}
}

// TestCheckpointEmptyTransactionsHoldNoMemory: while acknowledgements
// stall (a broker outage), transactions without changes for the handler
// keep coming; the queue must not grow with them.
func TestCheckpointEmptyTransactionsHoldNoMemory(t *testing.T) {
	t.Parallel()
	cp := newCheckpoint(1)
	m := cp.begin()
	ack := cp.track(m)
	cp.seal(m, 10)
	for i := range 100_000 {
		cp.seal(cp.begin(), pglogrepl.LSN(20+i))
	}
	if got := cp.inFlight(); got != 1 {
		t.Fatalf("inFlight after 100,000 empty transactions behind an unacknowledged one: got %d, want 1", got)
	}
	if got := cp.advance(); got != 1 {
		t.Fatalf("advance before the ack: got %s, want 0/1", got)
	}
	ack.Done()
	if got, want := cp.advance(), pglogrepl.LSN(20+100_000-1); got != want {
		t.Fatalf("advance after the ack: got %s, want %s (the last empty transaction's end)", got, want)
	}
}

func TestZeroAckIsNoop(t *testing.T) {
	t.Parallel()
	Ack{}.Done() // must not panic
}

// TestCheckpointConcurrentAcks acknowledges changes from many goroutines in
// random order while the owner advances, as producer callbacks do; run
// with -race.
func TestCheckpointConcurrentAcks(t *testing.T) {
	t.Parallel()
	const txns, perTxn = 50, 8
	cp := newCheckpoint(1)
	var acks []Ack
	var ends []pglogrepl.LSN
	for i := range txns {
		m := cp.begin()
		for range perTxn {
			acks = append(acks, cp.track(m))
		}
		end := pglogrepl.LSN(100 * (i + 1))
		cp.seal(m, end)
		ends = append(ends, end)
	}
	rand.Shuffle(len(acks), func(i, j int) { acks[i], acks[j] = acks[j], acks[i] })

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(acks); i += 4 {
				acks[i].Done()
			}
		})
	}
	last := pglogrepl.LSN(1)
	for done := false; !done; {
		lsn := cp.advance()
		if lsn < last {
			t.Fatalf("advance went backwards: got %s after %s", lsn, last)
		}
		if lsn != 1 && !slices.Contains(ends, lsn) {
			t.Fatalf("advance: got %s, want the end of some transaction", lsn)
		}
		last = lsn
		done = lsn == ends[len(ends)-1]
		if !done {
			wg.Wait() // every ack is in after this; the next advance must finish
		}
	}
	if got := cp.inFlight(); got != 0 {
		t.Errorf("inFlight: got %d, want 0", got)
	}
}
