package registry

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

const (
	v1Schema       = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int"}]}`
	addNullable    = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int"},{"name":"note","type":["null","string"],"default":null}]}`
	addRequired    = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int"},{"name":"note","type":"string"}]}`
	dropRequired   = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"}]}`
	qtyAsString    = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"},{"name":"qty","type":"string"}]}`
	qtyAsLong      = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"},{"name":"qty","type":"long"}]}`
	withNullableV1 = `{"type":"record","name":"orders","namespace":"public","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}`
)

func TestCheckCompatible(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		level      Level
		prev, next string
		want       []string // substrings of the error; nil: compatible
	}{
		{"same", LevelFull, v1Schema, v1Schema, nil},
		{"add nullable full", LevelFull, v1Schema, addNullable, nil},
		{"add required", LevelBackward, v1Schema, addRequired, []string{"BACKWARD", "note"}},
		{"drop nullable full", LevelFull, withNullableV1, dropRequired, nil},
		{"drop required full", LevelFull, v1Schema, dropRequired, []string{"FORWARD", "qty"}},
		{"drop required backward", LevelBackward, v1Schema, dropRequired, nil},
		{"int to string", LevelFull, v1Schema, qtyAsString, []string{"BACKWARD", "FORWARD"}},
		{"int to long backward", LevelBackward, v1Schema, qtyAsLong, nil},
		{"int to long full", LevelFull, v1Schema, qtyAsLong, []string{"FORWARD"}},
		{"none", LevelNone, v1Schema, qtyAsString, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := CheckCompatible(tc.level, tc.prev, tc.next)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want compatible", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got compatible, want an error naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"full", "backward", "none"} {
		if l, err := ParseLevel(s); err != nil || string(l) != s {
			t.Errorf("ParseLevel(%q): got %q, %v", s, l, err)
		}
	}
	if _, err := ParseLevel("FULL_TRANSITIVE"); err == nil {
		t.Error("ParseLevel(FULL_TRANSITIVE): got no error")
	}
}

// TestEvolveChecksLocally: srfake accepts any schema, so only the local
// check stands between an incompatible change and a new version.
func TestEvolveChecksLocally(t *testing.T) {
	t.Parallel()
	reg := srfake.New()
	t.Cleanup(reg.Close)
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := NewSchemas(cl)
	id1, err := s.Evolve(ctx, "orders-value", v1Schema, LevelFull)
	if err != nil {
		t.Fatalf("first version: %v", err)
	}
	id2, err := s.Evolve(ctx, "orders-value", addNullable, LevelFull)
	if err != nil || id2 == id1 {
		t.Fatalf("add nullable: got id %d (first %d), %v; want a new id", id2, id1, err)
	}
	// Back to the first shape (a replayed stream): its id, no check.
	if id, err := s.Evolve(ctx, "orders-value", v1Schema, LevelFull); err != nil || id != id1 {
		t.Fatalf("replayed first shape: got %d, %v; want %d", id, err, id1)
	}
	_, err = s.Evolve(ctx, "orders-value", qtyAsString, LevelFull)
	var inc *IncompatibleError
	if !errors.As(err, &inc) || !inc.Local || inc.Version != 2 {
		t.Fatalf("int to string: got %v, want a local IncompatibleError against version 2", err)
	}
	if !strings.Contains(err.Error(), "not full compatible with its latest version 2") {
		t.Errorf("got %q, want it to name the level and version", err)
	}
	vs, err := cl.SubjectVersions(ctx, "orders-value")
	if err != nil || len(vs) != 2 {
		t.Errorf("versions after the refusal: got %v, %v; want 2 versions", vs, err)
	}
	// The operator's escape hatch.
	if _, err := s.Evolve(ctx, "orders-value", qtyAsString, LevelNone); err != nil {
		t.Errorf("level none: got %v, want it registered", err)
	}
}
