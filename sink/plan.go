package sink

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hamba/avro/v2"
)

// compile reads the sources' schemas from the registry and builds the
// plan: column types, where each row key comes from, and the checks that
// would otherwise fail on the first record (a needed field the topic lacks;
// an owner whose row key is not its whole topic key, which a tombstone
// could not yield).
func compile(ctx context.Context, m *ReadModel, reg schemaRegistry, api avro.API) (*plan, error) {
	p := &plan{model: m, owner: -1}
	keyTypes := make([]fieldType, len(m.Key))
	// srcKeyTypes are each source's row-key field types, checked against
	// the owner's once every source is read (the owner may come last).
	srcKeyTypes := make([][]fieldType, len(m.Sources))
	keySet := map[string]int{}
	for i, k := range m.Key {
		keySet[k] = i
	}
	var errs []error
	type pending struct {
		name   string
		source int
		field  fieldRef
		typ    fieldType
		over   string
	}
	var cols []pending
	for si := range m.Sources {
		s := &m.Sources[si]
		if s.Owner {
			p.owner = si
		}
		need := append([]string{}, s.Key...)
		for _, c := range s.Columns {
			need = append(need, c.Field)
		}
		dec, err := newRecordDecoder(ctx, reg, api, s.Topic, need)
		if err != nil {
			errs = append(errs, fmt.Errorf("source topic %s: %w", s.Topic, err))
			p.sources = append(p.sources, sourcePlan{topic: s.Topic})
			continue
		}
		sp := sourcePlan{topic: s.Topic, decoder: dec, ahead: dec.clone()}
		lookup := func(field string, preferKey bool) (fieldRef, fieldType, bool) {
			order := []bool{false, true}
			if preferKey {
				order = []bool{true}
			}
			for _, inKey := range order {
				if t, slot, ok := dec.has(field, inKey); ok {
					return fieldRef{name: field, fromKey: inKey, slot: slot}, t, true
				}
			}
			return fieldRef{}, fieldType{}, false
		}
		for i, f := range s.Key {
			ref, t, ok := lookup(f, s.Owner)
			if !ok {
				where := "value or key"
				fields := dec.fieldNames(false) + "; key: " + dec.fieldNames(true)
				if s.Owner {
					where, fields = "key", dec.fieldNames(true)
				}
				errs = append(errs, fmt.Errorf("source topic %s: key field %q is not a field of its %s record (fields: %s)%s", s.Topic, f, where, fields, ownerHint(s.Owner)))
				continue
			}
			sp.keyFields = append(sp.keyFields, ref)
			if s.Owner && i < len(keyTypes) {
				keyTypes[i] = t
			}
			srcKeyTypes[si] = append(srcKeyTypes[si], t)
		}
		if s.Owner && len(sp.keyFields) == len(s.Key) {
			// Two live owner records must never share a row: the row key
			// is the whole topic key.
			covered := map[string]bool{}
			for _, f := range s.Key {
				covered[f] = true
			}
			for f := range dec.key.fields {
				if !covered[f] {
					errs = append(errs, fmt.Errorf("source topic %s (owner): its topic key field %q is not part of the row key: the owner's key must list every topic key field (%s), or two of its records would share a row", s.Topic, f, dec.fieldNames(true)))
				}
			}
		}
		for _, c := range s.Columns {
			if k, isKey := keySet[c.Name]; isKey {
				_ = k // written from Key; config checked it is the same field
				continue
			}
			ref, t, ok := lookup(c.Field, false)
			if !ok {
				errs = append(errs, fmt.Errorf("source topic %s: column %q reads field %q, which its records lack (value fields: %s; key fields: %s)", s.Topic, c.Name, c.Field, dec.fieldNames(false), dec.fieldNames(true)))
				continue
			}
			cols = append(cols, pending{name: c.Name, source: si, field: ref, typ: t, over: c.Type})
		}
		p.sources = append(p.sources, sp)
	}
	if p.owner >= 0 && len(srcKeyTypes[p.owner]) == len(m.Key) {
		for si, types := range srcKeyTypes {
			if si == p.owner || len(types) != len(m.Key) {
				continue
			}
			s := &m.Sources[si]
			for i, t := range types {
				if !joinsKey(t, keyTypes[i]) {
					errs = append(errs, fmt.Errorf("source topic %s: row-key field %q is %s, but key column %q is %s (from field %q of the owner, topic %s): the values would never find the owner's rows; make the field the same type in the producer, or read another field",
						s.Topic, s.Key[i], fieldDescription(t), m.Key[i], fieldDescription(keyTypes[i]), m.Sources[p.owner].Key[i], m.Sources[p.owner].Topic))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err // the caller names the read model
	}
	overrides := map[string]string{}
	for _, s := range m.Sources {
		for _, c := range s.Columns {
			if _, isKey := keySet[c.Name]; isKey && c.Type != "" {
				overrides[c.Name] = c.Type
			}
		}
	}
	for i, k := range m.Key {
		t := keyTypes[i]
		t.nullable = false
		p.columns = append(p.columns, column{name: k, typ: t, source: -1, override: overrides[k]})
	}
	// Non-key columns in source order, then file order (stable).
	sort.SliceStable(cols, func(i, j int) bool { return cols[i].source < cols[j].source })
	for _, c := range cols {
		// Null when the field is, and always for a non-owner source: its
		// columns are empty until it writes them, and cleared by its
		// tombstone.
		c.typ.nullable = c.typ.nullable || c.source != p.owner
		p.sources[c.source].cols = append(p.sources[c.source].cols, len(p.columns))
		p.sources[c.source].fields = append(p.sources[c.source].fields, c.field)
		p.columns = append(p.columns, column{name: c.name, typ: c.typ, source: c.source, override: c.over})
	}
	return p, nil
}

// joinsKey reports whether a non-owner's row-key field of type t finds the
// owner's rows, keyed by a column of the owner's field type owner: the
// row is found by the hash of the decoded values (hashValues) and updated
// by the key column's value, so both must be the same for equal keys. The
// type is compared whatever its nullability (a null key is no row). An
// Avro int into a long key column is accepted: both decode to integers
// whose hashes are equal, and every int fits the column; a long into an
// int column is not (a value past 32 bits would fail the column).
//
// Likewise a string and a uuid (the sink decodes a uuid as its string),
// and two decimals of the same scale whatever their precision (equal
// values decode to equal rationals).
func joinsKey(t, owner fieldType) bool {
	t.nullable, owner.nullable = false, false
	if !t.array && !owner.array {
		stringy := func(k kind) bool { return k == kindString || k == kindUUID }
		switch {
		case t.kind == kindInt && owner.kind == kindLong,
			stringy(t.kind) && stringy(owner.kind),
			t.kind == kindDecimal && owner.kind == kindDecimal && t.scale == owner.scale:
			return true
		}
	}
	return t == owner
}

func ownerHint(owner bool) string {
	if owner {
		return ": the owner's row key must come from its topic key, so that a tombstone (which carries only the key) names the row to delete"
	}
	return ""
}

// columnNames lists the plan's columns, key first.
func (p *plan) columnNames() []string {
	out := make([]string, len(p.columns))
	for i, c := range p.columns {
		out[i] = c.name
	}
	return out
}
