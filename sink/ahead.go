package sink

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kgo"
)

// decodedBatch is a poll's records, the first n of them decoded (an entry
// or the error of each): a rebuild decodes the next batch while the store
// writes the current one. Decoding does not depend on the offsets, so a
// batch decoded ahead is applied exactly as if decoded then: process
// still filters it by the offsets it finds, and poison records still meet
// on_error when their batch is applied, in order.
type decodedBatch struct {
	recs []*kgo.Record
	ents []entry
	errs []error
	n    int
}

// decodeAhead decodes recs with the sources' ahead decoders. It stops
// after an error that is not a poison record's (a registry outage, a
// schema the read model cannot read): process returns it if that record
// is still to apply, and decodes the records after it itself.
//
// In a read model of one source it also converts each record's row to
// driver values (entry.row), which write would otherwise do while the
// server waits for the batch's COPY: the conversion depends on the plan
// alone, like the decoding. A row that does not convert is left to write,
// which fails the record there as it would have.
func (s *Sink) decodeAhead(ctx context.Context, recs []*kgo.Record) *decodedBatch {
	b := &decodedBatch{recs: recs, ents: make([]entry, len(recs)), errs: make([]error, len(recs))}
	convert := len(s.a.p.sources) == 1
	nc := len(s.a.p.columns)
	var cells, rk []any
	for i, r := range recs {
		src := s.a.sourceOf(r.Topic)
		if src < 0 {
			break // not a source's: process skips it, or decodes it and says so
		}
		b.ents[i], b.errs[i] = s.a.decodeWith(ctx, s.a.p.sources[src].ahead, src, r)
		b.n = i + 1
		if b.errs[i] != nil {
			if !errors.Is(b.errs[i], errUndecodable) {
				break
			}
			continue
		}
		if convert && !b.ents[i].value.none() {
			if cells == nil {
				cells = make([]any, len(recs)*nc) // one allocation for the batch's rows
				rk = make([]any, len(s.a.p.sources[src].keyFields))
			}
			row := cells[i*nc : (i+1)*nc : (i+1)*nc]
			if s.a.ownerRowInto(row, rk, &b.ents[i]) == nil {
				b.ents[i].row = row
			}
		}
	}
	return b
}

// pollAhead polls the next batch and decodes it in a goroutine of its
// own, while the caller writes the current batch; the caller must
// receive from the returned channel (after stop, if it no longer wants
// to wait for records; after cancelling ctx, if it no longer wants the
// decode either) before it polls or decodes again, or returns. At most
// one batch is in flight.
func (s *Sink) pollAhead(ctx context.Context, cl *kgo.Client) (next <-chan *decodedBatch, stop context.CancelFunc) {
	pctx, cancel := context.WithCancel(ctx)
	ch := make(chan *decodedBatch, 1)
	go func() {
		fetches := cl.PollRecords(pctx, s.cfg.MaxBatch)
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("fetch failed; retrying", "topic", t, "partition", p, "error", err)
			}
		})
		// Decoded with ctx, not pctx: a stopped poll's records (those it
		// returned before the stop) are decoded whole all the same.
		ch <- s.decodeAhead(ctx, fetches.Records())
	}()
	return ch, cancel
}
