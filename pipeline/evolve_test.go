package pipeline

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// fakeSchemas is a schemaRegistry handing out ids from 100 on, or refusing.
type fakeSchemas struct {
	refuse error
	calls  []string // subject per call
	next   int
}

func (f *fakeSchemas) Evolve(_ context.Context, subject, _ string, _ registry.Level) (int, error) {
	f.calls = append(f.calls, subject)
	if f.refuse != nil {
		return 0, f.refuse
	}
	f.next++
	return 99 + f.next, nil
}

// specEntities is newEntities with the spec kept, as cmd builds them.
func specEntities(t *testing.T, table *relation.Table, spec mapping.Spec) []Entity {
	t.Helper()
	e, err := mapping.NewEntity(spec, table, mapping.Options{})
	if err != nil {
		t.Fatalf("NewEntity: %v", err)
	}
	return []Entity{{Mapping: e, KeySchemaID: keySchemaID, ValueSchemaID: valueSchemaID, Spec: spec}}
}

// withColumn returns table plus a nullable text column.
func withColumn(table *relation.Table, name string) *relation.Table {
	t := *table
	t.Columns = append(slices.Clone(table.Columns), relation.Column{Name: name, Type: relation.Type{Kind: relation.Text, OID: 25, Name: "text"}, Nullable: true})
	return &t
}

func TestFollowShapeAddColumn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		spec      mapping.Spec
		wantCalls []string
		wantID    int
	}{
		{"all columns", mapping.Spec{Name: "account", Topic: "accounts"}, []string{"accounts-value"}, 100},
		{"columns list", mapping.Spec{Name: "account", Topic: "accounts", Columns: []string{"id", "email"}}, nil, valueSchemaID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			old := accountsTable()
			reg := &fakeSchemas{}
			prod := &fakeProducer{}
			p := New(specEntities(t, old, tc.spec), prod, WithSchemas(reg))
			next := withColumn(old, "nickname")
			got, err := p.FollowShape(t.Context(), 0, old, next, testLSN)
			if err != nil {
				t.Fatalf("FollowShape: %v", err)
			}
			if len(got.Columns) != numColumns+1 {
				t.Fatalf("returned table: %d columns, want %d", len(got.Columns), numColumns+1)
			}
			// A column the entity does not read is left undecoded by the
			// source, whatever its type.
			if unused := got.Columns[numColumns].Unused; unused != (tc.spec.Columns != nil) {
				t.Errorf("added column: Unused %v, want %v", unused, tc.spec.Columns != nil)
			}
			if !slices.Equal(reg.calls, tc.wantCalls) {
				t.Errorf("registrations: got %v, want %v", reg.calls, tc.wantCalls)
			}
			row := append(accountRow(1, 1), "nick")
			if err := p.Handle(t.Context(), change(got, source.OpInsert, row, nil)); err != nil {
				t.Fatalf("Handle in the new shape: %v", err)
			}
			e := p.entities[0].Mapping
			value := decodeFramed(t, "value", prod.produced()[0].r.Value, tc.wantID, e.ValueSchema())
			_, has := value["nickname"]
			if has != (tc.spec.Columns == nil) {
				t.Errorf("value %v: nickname present %v, want %v", value, has, tc.spec.Columns == nil)
			}
			if tc.spec.Columns == nil && !strings.Contains(e.ValueSchema(), `{"name":"nickname","type":["null","string"],"default":null}`) {
				t.Errorf("new value schema %s: want nickname nullable with default null", e.ValueSchema())
			}
		})
	}
}

func TestFollowShapeRefusals(t *testing.T) {
	t.Parallel()
	old := accountsTable()
	retyped := *old
	retyped.Columns = slices.Clone(old.Columns)
	retyped.Columns[colVersion].Type = relation.Type{Kind: relation.Text, OID: 25, Name: "text"}
	dropped := *old
	dropped.Columns = slices.Delete(slices.Clone(old.Columns), colEmail, colEmail+1)
	noKey := *old
	noKey.Columns = slices.Clone(old.Columns[1:])
	incompatible := &registry.IncompatibleError{Subject: "accounts-value", Messages: []string{"reader field email is missing"}, Local: true, Version: 1, Level: registry.LevelFull}
	for _, tc := range []struct {
		name   string
		spec   mapping.Spec
		next   *relation.Table
		refuse error
		want   []string
	}{
		{"type change refused", mapping.Spec{Name: "account", Topic: "accounts"}, &retyped, incompatible,
			[]string{"table public.accounts changed at LSN 0/16B3748", `column "version" changed type from integer to text`, "entities[0].compatibility: none", "Incompatible schema changes", "replicator's compatibility check"}},
		{"drop refused", mapping.Spec{Name: "account", Topic: "accounts"}, &dropped, incompatible,
			[]string{`column "email" (text) dropped`, "not full compatible"}},
		{"registry down", mapping.Spec{Name: "account", Topic: "accounts"}, &dropped, errors.New("connection refused"),
			[]string{`register the new value schema of entity "account"`, "connection refused"}},
		{"listed column dropped", mapping.Spec{Name: "account", Topic: "accounts", Columns: []string{"id", "email"}}, &dropped, nil,
			[]string{`column "email" (text) dropped`, `"email" listed in columns: does not exist`, "change its configuration"}},
		{"key column dropped", mapping.Spec{Name: "account", Topic: "accounts"}, &noKey, nil,
			[]string{`column "id" (bigint) dropped`, `primary key column "id"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := &fakeSchemas{refuse: tc.refuse}
			prod := &fakeProducer{}
			ents := specEntities(t, old, tc.spec)
			before := ents[0]
			p := New(ents, prod, WithSchemas(reg))
			_, err := p.FollowShape(t.Context(), 0, old, tc.next, testLSN)
			if err == nil {
				t.Fatal("FollowShape: got no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if e := p.entities[0]; e.Mapping != before.Mapping || e.KeySchemaID != before.KeySchemaID || e.ValueSchemaID != before.ValueSchemaID {
				t.Errorf("entity changed after a refusal")
			}
			// Still the old shape: rows decoded before the change encode.
			if err := p.Handle(t.Context(), change(old, source.OpInsert, accountRow(1, 1), nil)); err != nil {
				t.Errorf("Handle in the old shape after a refusal: %v", err)
			}
		})
	}
}

// TestFollowShapeChecksLocally: the embedded registry (srfake) accepts
// anything; the pipeline still refuses an incompatible type change and
// registers nothing, and accepts an added column.
func TestFollowShapeChecksLocally(t *testing.T) {
	t.Parallel()
	fake := srfake.New()
	t.Cleanup(fake.Close)
	cl, err := sr.NewClient(sr.URLs(fake.URL()))
	if err != nil {
		t.Fatal(err)
	}
	old := accountsTable()
	spec := mapping.Spec{Name: "account", Topic: "accounts"}
	ents := specEntities(t, old, spec)
	ctx := t.Context()
	if ents[0].ValueSchemaID, err = registry.Register(ctx, cl, "accounts-value", ents[0].Mapping.ValueSchema()); err != nil {
		t.Fatal(err)
	}
	if ents[0].KeySchemaID, err = registry.Register(ctx, cl, "accounts-key", ents[0].Mapping.KeySchema()); err != nil {
		t.Fatal(err)
	}
	p := New(ents, &fakeProducer{}, WithSchemas(registry.NewSchemas(cl)))
	retyped := *old
	retyped.Columns = slices.Clone(old.Columns)
	retyped.Columns[colVersion].Type = relation.Type{Kind: relation.Text, OID: 25, Name: "text"}
	if _, err := p.FollowShape(ctx, 0, old, &retyped, testLSN); err == nil || !strings.Contains(err.Error(), "reader schema string not compatible with writer schema int") {
		t.Fatalf("type change: got %v, want a local refusal", err)
	}
	if vs, err := cl.SubjectVersions(ctx, "accounts-value"); err != nil || len(vs) != 1 {
		t.Fatalf("versions after the refusal: got %v, %v; want 1", vs, err)
	}
	if _, err := p.FollowShape(ctx, 0, old, withColumn(old, "nickname"), testLSN); err != nil {
		t.Fatalf("added column: %v", err)
	}
	if vs, err := cl.SubjectVersions(ctx, "accounts-value"); err != nil || len(vs) != 2 {
		t.Fatalf("versions after ADD COLUMN: got %v, %v; want 2", vs, err)
	}
}

// TestFollowShapeSameAvro: a type change PostgreSQL sees (text to varchar)
// but Avro does not registers nothing and keeps the schema ids.
func TestFollowShapeSameAvro(t *testing.T) {
	t.Parallel()
	old := accountsTable()
	next := *old
	next.Columns = slices.Clone(old.Columns)
	next.Columns[colEmail].Type = relation.Type{Kind: relation.Text, OID: 1043, Name: "character varying(80)"}
	reg := &fakeSchemas{}
	p := New(specEntities(t, old, mapping.Spec{Name: "account", Topic: "accounts"}), &fakeProducer{}, WithSchemas(reg))
	if _, err := p.FollowShape(t.Context(), 0, old, &next, testLSN); err != nil {
		t.Fatalf("FollowShape: %v", err)
	}
	if len(reg.calls) != 0 || p.entities[0].ValueSchemaID != valueSchemaID || p.entities[0].KeySchemaID != keySchemaID {
		t.Errorf("got registrations %v and ids %d/%d, want none and the old ids", reg.calls, p.entities[0].KeySchemaID, p.entities[0].ValueSchemaID)
	}
}

// TestFollowShapeRefusesKeyChange: a shape change that changes the key
// schema (the key column's type) is refused even under compatibility none,
// registers nothing and says why and the way out.
func TestFollowShapeRefusesKeyChange(t *testing.T) {
	t.Parallel()
	old := accountsTable()
	retyped := *old
	retyped.Columns = slices.Clone(old.Columns)
	retyped.Columns[colID].Type = relation.Type{Kind: relation.Int32, OID: 23, Name: "integer"}
	reg := &fakeSchemas{}
	ents := specEntities(t, old, mapping.Spec{Name: "account", Topic: "accounts"})
	ents[0].Compatibility = registry.LevelNone
	before := ents[0]
	p := New(ents, &fakeProducer{}, WithSchemas(reg))
	_, err := p.FollowShape(t.Context(), 0, old, &retyped, testLSN)
	var kc *registry.KeyChangeError
	if !errors.As(err, &kc) || kc.Subject != "accounts-key" || kc.ID != keySchemaID {
		t.Fatalf("FollowShape: got %v, want a *registry.KeyChangeError for accounts-key, id %d", err, keySchemaID)
	}
	for _, w := range []string{"table public.accounts changed at LSN 0/16B3748", `column "id" changed type from bigint to integer`,
		"every key would get new bytes", "compaction would keep", "new topic", "whatever entities[].compatibility says"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if len(reg.calls) != 0 {
		t.Errorf("registered %v after a key change, want nothing", reg.calls)
	}
	if e := p.entities[0]; e.Mapping != before.Mapping || e.KeySchemaID != before.KeySchemaID {
		t.Errorf("entity changed after a refused key change")
	}
}

// TestFollowShapeAsStringOfAbsentColumn: an unsupported column added while
// older changes were unconfirmed is refused with the advice to list it in
// as_string:; with that done, the stream's shapes from before the column
// existed must map (the column is simply not there), and the shape with it
// exports it as text. Before, the older shape failed with "does not exist".
func TestFollowShapeAsStringOfAbsentColumn(t *testing.T) {
	t.Parallel()
	old := accountsTable()
	withGeo := withColumn(old, "geo")
	withGeo.Columns[len(withGeo.Columns)-1].Type = relation.Type{Kind: relation.Unsupported, OID: 600, Name: "point"}

	// Without as_string: the new column is refused, naming the way out.
	p := New(specEntities(t, old, mapping.Spec{Name: "account", Topic: "accounts"}), &fakeProducer{}, WithSchemas(&fakeSchemas{}))
	if _, err := p.FollowShape(t.Context(), 0, old, withGeo, testLSN); err == nil || !strings.Contains(err.Error(), "list it in as_string:") {
		t.Fatalf("unsupported column added: got %v, want the as_string: advice", err)
	}

	// With the advice taken, a restart starts from the catalog (with geo)
	// and the stream replays the older shape first, then the new one.
	spec := mapping.Spec{Name: "account", Topic: "accounts", AsString: []string{"geo"}}
	reg := &fakeSchemas{}
	p = New(specEntities(t, withGeo, spec), &fakeProducer{}, WithSchemas(reg))
	got, err := p.FollowShape(t.Context(), 0, withGeo, old, testLSN)
	if err != nil {
		t.Fatalf("older shape without the as_string: column: %v", err)
	}
	if len(got.Columns) != numColumns {
		t.Errorf("older shape: got %d columns, want %d", len(got.Columns), numColumns)
	}
	if err := p.Handle(t.Context(), change(got, source.OpInsert, accountRow(1, 1), nil)); err != nil {
		t.Fatalf("row of the older shape: %v", err)
	}
	got, err = p.FollowShape(t.Context(), 0, old, withGeo, testLSN)
	if err != nil {
		t.Fatalf("shape with the as_string: column: %v", err)
	}
	if c, _, _ := got.Column("geo"); c.Type.Kind != relation.Text {
		t.Errorf("geo: got kind %v, want text (as_string:)", c.Type.Kind)
	}
	if !strings.Contains(p.entities[0].Mapping.ValueSchema(), `"geo"`) {
		t.Errorf("value schema %s lacks geo", p.entities[0].Mapping.ValueSchema())
	}
}
