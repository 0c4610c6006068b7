package metrics

import (
	"context"
	"sync/atomic"

	"github.com/replicator/replicator/registry"
)

// evolver registers a schema version (*registry.Schemas).
type evolver interface {
	Evolve(ctx context.Context, subject, avroSchema string, level registry.Level) (int, error)
}

// SchemaCounter counts schema registrations for
// replicator_schema_registrations_total. Safe for concurrent use.
type SchemaCounter struct{ n atomic.Uint64 }

// Add counts n registrations.
func (c *SchemaCounter) Add(n int) { c.n.Add(uint64(n)) }

// Count is the registrations so far.
func (c *SchemaCounter) Count() uint64 { return c.n.Load() }

// Wrap returns next counting each successful registration.
func (c *SchemaCounter) Wrap(next evolver) *CountingSchemas {
	return &CountingSchemas{next: next, c: c}
}

// CountingSchemas is a schema registry (as the pipeline uses one) that
// counts registrations.
type CountingSchemas struct {
	next evolver
	c    *SchemaCounter
}

// Evolve registers through the wrapped registry and counts a success.
func (s *CountingSchemas) Evolve(ctx context.Context, subject, avroSchema string, level registry.Level) (int, error) {
	id, err := s.next.Evolve(ctx, subject, avroSchema, level)
	if err == nil {
		s.c.Add(1)
	}
	return id, err
}
