package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// RegisterKey registers a subject's first key schema, returns the same id
// for it again, and refuses any other key schema (srfake accepts anything,
// as a registry under compatibility NONE would) without registering it.
func TestRegisterKeyRefusesChange(t *testing.T) {
	t.Parallel()
	fake := srfake.New()
	t.Cleanup(fake.Close)
	cl, err := sr.NewClient(sr.URLs(fake.URL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	long := `{"type":"record","name":"k","fields":[{"name":"id","type":"long"}]}`
	id, err := RegisterKey(ctx, cl, "orders-key", long)
	if err != nil {
		t.Fatalf("first registration: %v", err)
	}
	if again, err := RegisterKey(ctx, cl, "orders-key", long); err != nil || again != id {
		t.Fatalf("same key schema again: got %d, %v; want %d", again, err, id)
	}
	for _, changed := range []string{
		`{"type":"record","name":"k","fields":[{"name":"id","type":"int"}]}`,
		`{"type":"record","name":"k","fields":[{"name":"id","type":"long"},{"name":"region","type":"string"}]}`,
	} {
		_, err := RegisterKey(ctx, cl, "orders-key", changed)
		var kc *KeyChangeError
		if !errors.As(err, &kc) || kc.Subject != "orders-key" || kc.ID != id || kc.Version != 1 {
			t.Fatalf("changed key schema: got %v, want a *KeyChangeError at version 1, id %d", err, id)
		}
		for _, w := range []string{`subject "orders-key"`, "version 1, id", "compaction would keep", "new topic"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
	}
	if vs, err := cl.SubjectVersions(ctx, "orders-key"); err != nil || len(vs) != 1 {
		t.Fatalf("versions after refusals: got %v, %v; want 1", vs, err)
	}
}

// InSubject: an id is in the subjects it was registered under, in no
// other, and an unknown id is in none.
func TestSchemasInSubject(t *testing.T) {
	t.Parallel()
	fake := srfake.New()
	t.Cleanup(fake.Close)
	cl, err := sr.NewClient(sr.URLs(fake.URL()))
	if err != nil {
		t.Fatal(err)
	}
	id, err := Register(t.Context(), cl, "a-value", `{"type":"record","name":"a","fields":[]}`)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSchemas(cl)
	for _, tc := range []struct {
		id      int
		subject string
		want    bool
	}{{id, "a-value", true}, {id, "b-value", false}, {id + 100, "a-value", false}} {
		got, err := s.InSubject(t.Context(), tc.id, tc.subject)
		if err != nil || got != tc.want {
			t.Errorf("InSubject(%d, %s): got %v, %v; want %v", tc.id, tc.subject, got, err, tc.want)
		}
	}
}
