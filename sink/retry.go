package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// Backoff between attempts at a batch the store or the registry could not
// take: doubling from retryFirst up to retryCap, so that a restart of a few
// seconds costs about that, and a long outage a line in the log every
// retryCap.
const (
	retryFirst = 200 * time.Millisecond
	retryCap   = 30 * time.Second
)

// suspectAfter is how many times in a row a batch (or, once split, a
// record) may end the store's connection while the store answers before
// it is held to be the cause rather than an outage.
const suspectAfter = 3

// retryDelay is the wait after the attempt-th failed attempt (1-based).
func retryDelay(attempt int) time.Duration {
	d := retryFirst
	for i := 1; i < attempt && d < retryCap; i++ {
		d *= 2
	}
	return min(d, retryCap)
}

// retryable reports whether a batch failed for want of a service (the
// store or the schema registry) rather than because of its records or the
// read model's definition: the batch is tried again, from the stored
// offsets, since nothing of it committed. A poison record, a schema the
// read model cannot read, a table that does not fit: not retryable.
func retryable(err error) bool {
	var pe *PoisonError
	var se *SchemaError
	if errors.As(err, &pe) || errors.As(err, &se) || errors.Is(err, errUndecodable) {
		return false
	}
	var re *sr.ResponseError
	if errors.As(err, &re) {
		// The registry answered: only "try later" answers are an outage
		// (a proxy or the registry itself unavailable, rate limited).
		return re.StatusCode >= 500 || re.StatusCode == 429
	}
	return isTransient(err)
}

// processRetrying applies one poll's records ([Sink.processDecoded]), trying again
// with capped exponential backoff while the store or the registry is
// unavailable. Each attempt starts from the offsets stored with the rows:
// the failed one rolled back (or, if its commit's outcome is unknown, the
// offsets' compare-and-set finds it committed and the records are skipped
// after a reload), so nothing is applied twice or lost. It gives up after
// cfg.GiveUpAfter of consecutive failures (0: never). A stop (ctx) during the
// wait returns nil with the batch not applied: a restart meets it again.
//
// Meanwhile the batch's partitions stay with this process (the rebalance
// waits for the next poll): a rebalance that waits longer than its timeout
// moves them to another process, whose batches then fence this one's.
func (s *Sink) processRetrying(ctx context.Context, b *decodedBatch) error {
	var since time.Time
	clear(s.dlqSent)
	s.suspect = false
	defer func() { s.suspect = false }()
	ended := 0 // consecutive attempts that ended the store's connection while it answered
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			// Decoded again: the failed attempt may have used the rows
			// decoded ahead.
			b = &decodedBatch{recs: b.recs}
		}
		// The batch in progress finishes even when a stop arrives: a stop
		// takes effect between batches (or between attempts).
		err := s.processDecoded(context.WithoutCancel(ctx), b)
		if err == nil {
			if attempt > 1 {
				s.log.Info("the batch went through: the read model resumes", "store", s.cfg.StoreName, "attempts", attempt, "outage", time.Since(since).Round(time.Millisecond))
			}
			return nil
		}
		if !retryable(err) {
			return err
		}
		var se *storeError
		if errors.As(err, &se) && connectionEnded(se.err) && s.pingStore(ctx) == nil {
			ended++
		} else {
			ended = 0
		}
		if ended >= suspectAfter && !s.suspect {
			// Not an outage: the store answers each time the batch
			// has ended its connection. The next attempt splits it.
			if ctx.Err() != nil {
				return nil // a stop between attempts, as after the wait below
			}
			s.suspect = true
			s.log.Warn("the batch ended the store's connection each time while the store answers at once; applying it record by record to find the culprit", "store", s.cfg.StoreName, "attempts", attempt, "error", err)
			continue
		}
		if since.IsZero() {
			since = time.Now()
		}
		if out := time.Since(since); s.cfg.GiveUpAfter > 0 && out >= s.cfg.GiveUpAfter {
			return fmt.Errorf("gave up after %s of retries (give_up_after %s; the offsets stay before the batch, a restart resumes there): %w", out.Round(time.Second), s.cfg.GiveUpAfter, err)
		}
		delay := retryDelay(attempt)
		s.retries.Add(1)
		s.log.Warn("the batch failed for a passing cause (the store or the schema registry unavailable, or lock contention); it rolled back and is retried from the stored offsets", "store", s.cfg.StoreName, "attempt", attempt, "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}
