package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/relation"
)

// schemaRegistry registers a new schema version after checking it under a
// compatibility level, locally and with the registry
// (*registry.Schemas).
type schemaRegistry interface {
	Evolve(ctx context.Context, subject, avroSchema string, level registry.Level) (int, error)
}

// FollowShape rebuilds entity idx's mapping for the table's new shape (see
// source's shapeFollower). A new key or value schema is registered first,
// checked under the entity's Compatibility: an added column is a nullable
// field with default null, so it passes; a dropped NOT NULL column or a
// changed Avro type does not under the default level. On any refusal
// nothing changes and the error names the table, the columns with their old
// and new types, and what to do: the source stops before producing a row of
// the new shape. A changed key schema is always refused (a
// *registry.KeyChangeError), under any level. A shape that changes no exported column registers nothing.
// Called on the source's goroutine, like Handle.
func (p *Pipeline) FollowShape(ctx context.Context, idx int, prev, next *relation.Table, lsn pglogrepl.LSN) (*relation.Table, error) {
	if idx < 0 || idx >= len(p.entities) {
		return nil, fmt.Errorf("shape change for table index %d: no such entity", idx)
	}
	e := &p.entities[idx]
	where := fmt.Sprintf("table %s changed at LSN %s", next.QualifiedName(), lsn)
	if d := describeChange(prev, next); d != "" {
		where += " (" + d + ")"
	}
	// An as_string: column this shape lacks is not an error here: the
	// stream replays shapes from before the column was added (the advice
	// for an added unsupported column is to list it there) or after it
	// was dropped. A name the catalog lacks at start-up is a warning
	// there (mapping.AsStringNotInTable).
	spec := e.Spec
	spec.AsString, _ = mapping.PresentColumns(next, e.Spec.AsString)
	table, err := mapping.ApplyOverrides(*next, spec.AsString)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	ent, err := mapping.NewEntity(spec, &table, e.Options)
	if err != nil {
		return nil, fmt.Errorf("%s: entity %q no longer maps onto the table: %w; change its configuration to match the new table and restart: the change is replayed (see docs/OPERATIONS.md, Schema changes)", where, e.Spec.Name, err)
	}
	keyID, valueID := e.KeySchemaID, e.ValueSchemaID
	if ent.KeySchema() != e.Mapping.KeySchema() {
		// Never registered, whatever the compatibility level: a new key
		// schema changes every key's bytes (registry.KeyChangeError).
		return nil, fmt.Errorf("%s: entity %q: %w. Nothing was produced with it and the change is not confirmed, so every restart stops here again",
			where, e.Spec.Name, &registry.KeyChangeError{Subject: ent.KeySubject(), ID: e.KeySchemaID})
	}
	if ent.ValueSchema() != e.Mapping.ValueSchema() {
		if valueID, err = p.register(ctx, e, ent.ValueSubject(), ent.ValueSchema()); err != nil {
			return nil, p.refused(where, idx, e, "value", err)
		}
	}
	e.Mapping, e.KeySchemaID, e.ValueSchemaID = ent, keyID, valueID
	// The source leaves columns the entity does not read undecoded: an
	// added column outside columns: may have any type.
	ent.MarkUnused(&table)
	return &table, nil
}

func (p *Pipeline) register(ctx context.Context, e *Entity, subject, schema string) (int, error) {
	if p.schemas == nil {
		return 0, errors.New("the pipeline has no schema registry to register it with")
	}
	level := e.Compatibility
	if level == "" {
		level = registry.LevelFull
	}
	return p.schemas.Evolve(ctx, subject, schema, level)
}

// refused words a registration failure: an incompatible schema gets the
// procedure, anything else (registry unreachable) is retried by a restart.
func (p *Pipeline) refused(where string, idx int, e *Entity, what string, err error) error {
	var inc *registry.IncompatibleError
	if errors.As(err, &inc) {
		by := "the schema registry"
		if inc.Local {
			by = "replicator's compatibility check (entities[].compatibility)"
		}
		return fmt.Errorf("%s: the new %s schema of entity %q is refused by %s: %w. Nothing was produced with it and the change is not confirmed, so every restart stops here again. Once the topic's consumers can read the new shape, set entities[%d].compatibility: none (and the subject's compatibility in an external registry to NONE), restart, then set it back; or start the entity over on a new topic: see docs/OPERATIONS.md, Incompatible schema changes",
			where, what, e.Spec.Name, by, err, idx)
	}
	return fmt.Errorf("%s: register the new %s schema of entity %q: %w", where, what, e.Spec.Name, err)
}

// describeChange lists the column differences between two shapes of a
// table, with PostgreSQL type names. A rename shows as a drop and an add:
// pgoutput sends names only.
func describeChange(prev, next *relation.Table) string {
	var parts []string
	for _, c := range prev.Columns {
		n, _, ok := next.Column(c.Name)
		switch {
		case !ok:
			parts = append(parts, fmt.Sprintf("column %q (%s) dropped", c.Name, c.Type.Name))
		case n.Type.OID != c.Type.OID || n.Type.Name != c.Type.Name:
			parts = append(parts, fmt.Sprintf("column %q changed type from %s to %s", c.Name, c.Type.Name, n.Type.Name))
		}
	}
	for _, c := range next.Columns {
		if _, _, ok := prev.Column(c.Name); !ok {
			parts = append(parts, fmt.Sprintf("column %q (%s) added", c.Name, c.Type.Name))
		}
	}
	return strings.Join(parts, ", ")
}
