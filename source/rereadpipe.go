package source

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// maxInFlight and maxInFlightBytes bound the changes given to the re-read
// pipeline and not yet handed over, by count and by the bytes of their
// tuples as received (heldChange.size: the rows to re-read are small until
// re-read, but the changes queued behind them carry all their values); the
// stream goroutine waits for room beyond either. The values re-read add
// about three chunks (rereadChunkBytes) to that.
const (
	maxInFlight      = 4 * maxHeld
	maxInFlightBytes = 4 * maxHeldBytes
)

// maxBatches bounds the batches waiting for the pipeline's reader: a
// batch is a transaction, so this is how many transactions the WAL reader
// may be ahead of the re-reads.
const maxBatches = 1024

// rereadBatch is a run of held changes in WAL order: a transaction, or
// the part of one that could not wait for its end.
type rereadBatch struct {
	held []heldChange
	// narrow is per change whether its unsent columns may be read alone
	// (lastToName).
	narrow []bool
}

// rereadPipe re-reads held changes and hands them over off the stream
// goroutine, in strict FIFO order of batches, so that the WAL reader goes
// on reading the next transactions meanwhile (see reread.go for why the
// order and the checkpoint stay exact). Two goroutines: the reader runs
// the re-read statements a chunk at a time over the stream's SQL
// connection, the hand-over gives the chunks read to the handler; so the
// server reads the next rows while the handler maps and produces the
// previous ones.
//
// While anything is in flight the stream goroutine neither calls the
// handler nor uses the SQL connection: it holds every change and gives
// it to the pipeline, and waits for the pipeline to empty (drain) before
// anything else that calls the handler or the catalog. So the handler is
// called from one goroutine at a time, in WAL order.
type rereadPipe struct {
	st      *stream
	batches chan rereadBatch // stream goroutine → reader
	// inFlight counts the changes given to the pipeline and not yet
	// handed over; its decrement follows the hand-over, so a stream
	// goroutine that reads 0 may call the handler itself. inFlightBytes
	// is their size.
	inFlight      atomic.Int64
	inFlightBytes atomic.Int64
	freed         chan struct{} // capacity 1: inFlight went down
	handed        atomic.Uint64 // changes handed over since publishStats took them
}

func newRereadPipe(st *stream) *rereadPipe {
	return &rereadPipe{st: st, batches: make(chan rereadBatch, maxBatches), freed: make(chan struct{}, 1)}
}

// busy reports whether changes are in flight in p; a nil p (a stream
// built without one, in benchmarks) never is.
func (p *rereadPipe) busy() bool { return p != nil && p.inFlight.Load() > 0 }

// run re-reads and hands over the batches given until ctx ends or a
// re-read or the handler fails. Changes in flight then are never handed
// over: their acknowledgements stay pending, so the checkpoint does not
// pass them.
func (p *rereadPipe) run(ctx context.Context) error {
	// One chunk read ahead of the one handed over, at most, and one being
	// read: the memory of the values in flight is about three chunks'.
	chunks := make(chan []heldChange, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.read(gctx, chunks) })
	g.Go(func() error { return p.handOver(gctx, chunks) })
	return g.Wait()
}

// read re-reads the batches in order, a chunk (nextChunk) per statement,
// and passes each chunk on.
func (p *rereadPipe) read(ctx context.Context, out chan<- []heldChange) error {
	for {
		var b rereadBatch
		select {
		case b = <-p.batches:
		case <-ctx.Done():
			return ctx.Err()
		}
		if hook := p.st.src.beforeReread; hook != nil {
			hook(ctx, p)
		}
		b = p.coalesce(b)
		for from := 0; from < len(b.held); {
			to := from + nextChunk(b.held[from:], p.st.rowBytes)
			if err := p.st.rereadHeld(ctx, b.held[from:to], b.narrow[from:to]); err != nil {
				return err
			}
			select {
			case out <- b.held[from:to]:
			case <-ctx.Done():
				return ctx.Err()
			}
			from = to
		}
	}
}

// coalesce appends to b the batches already waiting behind it, up to
// maxHeld changes, so that the re-reads of small transactions share
// statements (a statement reads each key as of its own transaction):
// their order is kept, and so is each change's narrow.
func (p *rereadPipe) coalesce(b rereadBatch) rereadBatch {
	for len(b.held) < maxHeld {
		select {
		case next := <-p.batches:
			b.held = append(b.held, next.held...)
			b.narrow = append(b.narrow, next.narrow...)
		default:
			return b
		}
	}
	return b
}

// handOver gives the changes of each chunk to the handler in order; one
// whose row was gone is acknowledged instead.
func (p *rereadPipe) handOver(ctx context.Context, in <-chan []heldChange) error {
	var c Change // the handler may keep the pointer only during Handle
	for {
		var held []heldChange
		select {
		case held = <-in:
		case <-ctx.Done():
			return ctx.Err()
		}
		n, size := uint64(0), 0
		for i := range held {
			size += held[i].size
			if held[i].gone {
				held[i].c.Ack.Done()
				continue
			}
			c = held[i].c
			if err := p.st.h.Handle(ctx, &c); err != nil {
				return err
			}
			n++
		}
		p.handed.Add(n)
		clear(held) // the values are the handler's now
		p.inFlightBytes.Add(-int64(size))
		p.inFlight.Add(-int64(len(held)))
		select {
		case p.freed <- struct{}{}:
		default:
		}
	}
}

// push gives st.held to the pipeline, waiting for room; complete says
// the transaction was read to its end (COMMIT).
func (st *stream) push(ctx context.Context, complete bool) error {
	n, size := int64(len(st.held)), int64(st.heldBytes)
	if n == 0 {
		return nil
	}
	p := st.pipe
	b := rereadBatch{held: st.held, narrow: lastToName(st.held, complete)}
	// A batch larger than the bounds goes alone, once nothing else is in
	// flight.
	for p.inFlight.Load() > 0 && (p.inFlight.Load()+n > maxInFlight || p.inFlightBytes.Load()+size > maxInFlightBytes) {
		if err := p.wait(ctx); err != nil {
			return err
		}
	}
	p.inFlightBytes.Add(size)
	p.inFlight.Add(n)
	select {
	case p.batches <- b:
	case <-ctx.Done():
		return ctx.Err()
	}
	st.held, st.heldBytes = nil, 0 // the pipeline's now
	return nil
}

// drain gives st.held to the pipeline and waits until everything in it
// was handed over: then the stream goroutine may call the handler or use
// the SQL connection itself.
func (st *stream) drain(ctx context.Context) error {
	if err := st.push(ctx, false); err != nil {
		return err
	}
	for st.pipe.busy() {
		if err := st.pipe.wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// wait waits until changes in flight were handed over, or ctx ends.
func (p *rereadPipe) wait(ctx context.Context) error {
	select {
	case <-p.freed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
