package registry

import (
	"context"
	"fmt"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// Level is the compatibility replicator itself requires of a new schema
// version against the version it replaces, whatever the registry enforces:
// the embedded registry accepts anything, and a compacted entity topic keeps
// records of every version for consumers of every version.
type Level string

const (
	// LevelFull requires BACKWARD and FORWARD: a consumer on the new schema
	// reads old records and a consumer still on the old schema reads new
	// ones. Adding or dropping a nullable column passes; dropping a NOT NULL
	// column or changing a column's Avro type does not. The default.
	LevelFull Level = "full"
	// LevelBackward requires only that the new schema reads old records
	// (Confluent's default): dropping any column passes, as does a
	// promotion such as int to long.
	LevelBackward Level = "backward"
	// LevelNone checks nothing locally; the registry still decides.
	LevelNone Level = "none"
)

// ParseLevel returns the level named s: full, backward or none.
func ParseLevel(s string) (Level, error) {
	switch l := Level(s); l {
	case LevelFull, LevelBackward, LevelNone:
		return l, nil
	default:
		return "", fmt.Errorf("compatibility level %q is not one of full, backward, none", s)
	}
}

// CheckCompatible reports whether the Avro schema next may follow prev
// under level, checked locally with hamba/avro's schema compatibility.
// BACKWARD means next, as the reader, reads what prev wrote; FORWARD the
// reverse. The error says which direction fails and why.
func CheckCompatible(level Level, prev, next string) error {
	if level == LevelNone {
		return nil
	}
	// Separate caches: both schemas usually carry the same full name.
	ps, err := avro.ParseWithCache(prev, "", &avro.SchemaCache{})
	if err != nil {
		return fmt.Errorf("parse registered schema: %w", err)
	}
	ns, err := avro.ParseWithCache(next, "", &avro.SchemaCache{})
	if err != nil {
		return fmt.Errorf("parse new schema: %w", err)
	}
	sc := avro.NewSchemaCompatibility()
	back := sc.Compatible(ns, ps)
	var fwd error
	if level == LevelFull {
		fwd = sc.Compatible(ps, ns)
	}
	const (
		backMsg = "not BACKWARD compatible (the new schema cannot read records written with the old one)"
		fwdMsg  = "not FORWARD compatible (consumers still on the old schema cannot read new records)"
	)
	switch {
	case back != nil && fwd != nil:
		return fmt.Errorf("%s: %w; %s: %w", backMsg, back, fwdMsg, fwd)
	case back != nil:
		return fmt.Errorf("%s: %w", backMsg, back)
	case fwd != nil:
		return fmt.Errorf("%s: %w", fwdMsg, fwd)
	}
	return nil
}

// Evolve registers avroSchema under subject like [Register], after checking
// it locally under level against the subject's latest version, so a change
// the registry would accept (the embedded registry accepts anything) is still
// refused when consumers could not read it. A schema already registered under
// the subject returns its id without a check: it was accepted once, and a
// replayed stream returns to older shapes. A local refusal is an
// [*IncompatibleError] with Local set; nothing is registered then.
func Evolve(ctx context.Context, cl *sr.Client, subject, avroSchema string, level Level) (int, error) {
	s := sr.Schema{Schema: avroSchema, Type: sr.TypeAvro}
	have, err := cl.LookupSchema(ctx, subject, s)
	switch {
	case err == nil:
		return have.ID, nil
	case hasCode(err, sr.ErrSubjectNotFound):
		return Register(ctx, cl, subject, avroSchema)
	case hasCode(err, sr.ErrSchemaNotFound):
	default:
		return 0, fmt.Errorf("look up schema in subject %q: %w", subject, err)
	}
	latest, err := cl.SchemaByVersion(ctx, subject, -1)
	switch {
	case err == nil:
		if err := CheckCompatible(level, latest.Schema.Schema, avroSchema); err != nil {
			return 0, &IncompatibleError{Subject: subject, Messages: []string{err.Error()}, Local: true, Version: latest.Version, Level: level}
		}
	case hasCode(err, sr.ErrSubjectNotFound), hasCode(err, sr.ErrVersionNotFound):
		// Deleted meanwhile: nothing to be compatible with.
	default:
		return 0, fmt.Errorf("read latest schema of subject %q: %w", subject, err)
	}
	return Register(ctx, cl, subject, avroSchema)
}

// Schemas registers schema versions through a client, checking each under
// a [Level] first (see [Evolve]). Safe for concurrent use.
type Schemas struct{ cl *sr.Client }

// NewSchemas wraps cl.
func NewSchemas(cl *sr.Client) *Schemas { return &Schemas{cl: cl} }

// InSubject reports whether schema id is registered under subject (as any
// version).
func (s *Schemas) InSubject(ctx context.Context, id int, subject string) (bool, error) {
	vs, err := s.cl.SchemaVersionsByID(ctx, id)
	switch {
	case hasCode(err, sr.ErrSchemaNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	for _, v := range vs {
		if v.Subject == subject {
			return true, nil
		}
	}
	return false, nil
}

// Evolve is [Evolve] with the wrapped client.
func (s *Schemas) Evolve(ctx context.Context, subject, avroSchema string, level Level) (int, error) {
	return Evolve(ctx, s.cl, subject, avroSchema, level)
}
