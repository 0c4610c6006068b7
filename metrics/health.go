package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Check reports a problem as an error, nil when all is well. Checks are
// called on every /healthz or /readyz request and must be cheap.
type Check func(now time.Time) error

// Health is what /healthz (alive: no loop stuck) and /readyz (doing its
// job: streaming, consuming) answer. Safe for concurrent use.
type Health struct {
	mu    sync.Mutex // guards alive, ready and dogs
	alive []namedCheck
	ready []namedCheck
	dogs  []*Watchdog
}

type namedCheck struct {
	name  string
	check Check
}

// AddCheck adds a liveness check: /healthz fails while it does.
func (h *Health) AddCheck(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.alive = append(h.alive, namedCheck{name, c})
}

// AddReady adds a readiness check: /readyz fails while it does. With
// none, the process is not ready.
func (h *Health) AddReady(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready = append(h.ready, namedCheck{name, c})
}

// Alive runs the liveness checks.
func (h *Health) Alive(now time.Time) error { return run(h.checks(false), now, false) }

// Ready runs the readiness checks.
func (h *Health) Ready(now time.Time) error { return run(h.checks(true), now, true) }

func (h *Health) checks(ready bool) []namedCheck {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ready {
		return append([]namedCheck(nil), h.ready...)
	}
	return append([]namedCheck(nil), h.alive...)
}

func run(checks []namedCheck, now time.Time, needOne bool) error {
	if needOne && len(checks) == 0 {
		return errors.New("starting")
	}
	var errs []string
	for _, c := range checks {
		if err := c.check(now); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", c.name, err))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// Watchdog tells a loop that makes no progress while it has work pending
// from one that is idle: unhealthy when pending has stayed true and
// progress has not moved for longer than Bound. It learns by sampling
// (Observe, called by the Server every second), so a stall is reported
// within Bound plus a second whatever the probe interval.
type Watchdog struct {
	Bound    time.Duration
	Pending  func() bool   // work is waiting (records in flight)
	Progress func() uint64 // grows with progress (records acknowledged)
	// What names the stall in the check's error.
	What string

	mu    sync.Mutex // guards last and since
	last  uint64
	since time.Time // start of the current stall; zero: none
}

// Observe samples the loop.
func (w *Watchdog) Observe(now time.Time) {
	pending, progress := w.Pending(), w.Progress()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !pending || progress != w.last:
		w.since = time.Time{}
	case w.since.IsZero():
		w.since = now
	}
	w.last = progress
}

// Check is the Watchdog as a liveness check.
func (w *Watchdog) Check(now time.Time) error {
	w.mu.Lock()
	since := w.since
	w.mu.Unlock()
	if !since.IsZero() && now.Sub(since) > w.Bound {
		return fmt.Errorf("%s for %s (bound %s)", w.What, now.Sub(since).Round(time.Second), w.Bound)
	}
	return nil
}

// AddWatchdog adds w as a liveness check, sampled by Run.
func (h *Health) AddWatchdog(name string, w *Watchdog) {
	h.mu.Lock()
	h.dogs = append(h.dogs, w)
	h.mu.Unlock()
	h.AddCheck(name, w.Check)
}

// sampleEvery is how often Run samples the watchdogs.
const sampleEvery = time.Second

// Run samples the watchdogs every second until ctx ends.
func (h *Health) Run(ctx context.Context) error {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			h.mu.Lock()
			dogs := append([]*Watchdog(nil), h.dogs...)
			h.mu.Unlock()
			for _, w := range dogs {
				w.Observe(now)
			}
		}
	}
}
