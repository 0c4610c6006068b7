package sink

import (
	"bytes"
	"context"
	"errors"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
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
	// On PostgreSQL, once the table's column types are known (the first
	// batch reads them), rows are written as COPY lines straight from
	// their bytes (copyline.go) into one buffer for the batch.
	var types []string
	if convert {
		types = s.st.cachedTypes(s.a.p.model.Table, s.a.p.columnNames())
	}
	var text *bytes.Buffer
	var spans [][2]int // each line's bytes in text
	var keyCells []any // a line's row key, written into its line
	for i, r := range recs {
		src := s.a.sourceOf(r.Topic)
		if src < 0 {
			break // not a source's: process skips it, or decodes it and says so
		}
		if types != nil {
			if text == nil {
				text = bytes.NewBuffer(make([]byte, 0, int(s.aheadSize.Load())))
				spans = make([][2]int, len(recs))
				keyCells, rk = make([]any, nc), make([]any, len(s.a.p.sources[src].keyFields))
			}
			start := text.Len()
			if e, ok := s.a.aheadLine(ctx, src, r, types, keyCells, rk, text); ok {
				b.ents[i], b.n = e, i+1
				spans[i] = [2]int{start, text.Len()}
				continue
			}
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
	if text != nil {
		// The buffer grew while the lines were written: sliced now.
		all := text.Bytes()
		for i := range b.n {
			if sp := spans[i]; sp[1] > sp[0] {
				b.ents[i].line, b.ents[i].lineTypes = all[sp[0]:sp[1]:sp[1]], types
			}
		}
		s.aheadSize.Store(int64(text.Len() + text.Len()/8))
	}
	return b
}

// aheadLine decodes an owner's record of a read model of one source (not
// a tombstone) as its key and its row's COPY line, appended to text, for
// the column types types; false (text as it was) when the record must be
// decoded the values' way, which then also meets whatever failed here.
// keyCells and rk are scratch for the row key.
func (a *applier) aheadLine(ctx context.Context, src int, rec *kgo.Record, types []string, keyCells, rk []any, text *bytes.Buffer) (entry, bool) {
	if rec.Value == nil || src != a.p.owner {
		return entry{}, false
	}
	dec := a.p.sources[src].ahead
	e := entry{src: src, rec: rec}
	var err error
	if e.key, err = dec.decodeKey(ctx, rec.Key); err != nil {
		return entry{}, false
	}
	var hdr sr.ConfluentHeader
	id, payload, err := hdr.DecodeID(rec.Value)
	if err != nil {
		return entry{}, false
	}
	wr, err := dec.resolve(ctx, &dec.value, id)
	if err != nil {
		return entry{}, false
	}
	if !wr.linePlan || !slices.Equal(wr.lineTypes, types) {
		wr.line, wr.lineTypes, wr.linePlan = newLineEncoder(a.p, src, wr.ops, types), types, true
	}
	if wr.line == nil {
		return entry{}, false
	}
	if rk, err = a.rowKeyInto(rk, src, e.key, e.key); err != nil {
		return entry{}, false
	}
	if a.storeKeyInto(keyCells, rk) != nil {
		return entry{}, false
	}
	if !wr.line.encode(a, src, dec.r, payload, e.key, keyCells, text) {
		return entry{}, false
	}
	a.identify(&e)
	return e, true
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
