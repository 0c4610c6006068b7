package registry

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/replicator/replicator/certtest"
)

func TestEmbeddedRefusesOpenNetworkListen(t *testing.T) {
	t.Parallel()
	for _, cfg := range []EmbeddedConfig{
		{Listen: "0.0.0.0:0"},
		{Listen: ":0"},
		{Listen: "127.0.0.1:0", Username: "only-user"},
	} {
		_, err := StartEmbedded(t.Context(), cfg)
		if err == nil {
			t.Errorf("%+v: started", cfg)
			continue
		}
		if !strings.Contains(err.Error(), "registry.username") || !strings.Contains(err.Error(), "registry.password") {
			t.Errorf("%+v: error %q does not name the credential keys", cfg, err)
		}
	}
	if err := checkAuth(EmbeddedConfig{Listen: "0.0.0.0:8081", Username: "u", Password: "p"}); err != nil {
		t.Errorf("wildcard listen with credentials: %v", err)
	}
}

// TestEmbeddedBasicAuth: without credentials (or with wrong ones) every
// route answers 401; with them, registering and reading work.
func TestEmbeddedBasicAuth(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{Username: "replicator", Password: "s3cret", DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	for _, path := range []string{"/subjects", "/schemas/ids/1", "/config"} {
		for name, set := range map[string]func(*http.Request){
			"none":           func(*http.Request) {},
			"wrong password": func(r *http.Request) { r.SetBasicAuth("replicator", "guess") },
			"wrong user":     func(r *http.Request) { r.SetBasicAuth("admin", "s3cret") },
		} {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			set(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with %s credentials: got %d, want 401", path, name, resp.StatusCode)
			}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL()+"/subjects/x-value/versions",
		strings.NewReader(`{"schema":"{\"type\":\"string\"}"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("register without credentials: got %d, want 401", resp.StatusCode)
	}

	cl, err := NewClient(ClientConfig{URL: e.URL(), Username: "replicator", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: `"string"`}); err != nil {
		t.Fatalf("register with credentials: %v", err)
	}
	if subjects, err := cl.Subjects(ctx); err != nil || len(subjects) != 1 {
		t.Fatalf("Subjects with credentials: got %v (%v), want [x-value]", subjects, err)
	}
	anon, err := NewClient(ClientConfig{URL: e.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Subjects(ctx); err == nil {
		t.Errorf("Subjects without credentials: got no error")
	}
}

// TestEmbeddedTLS: with a certificate the registry serves HTTPS only; a
// client trusting its CA registers, one that does not is refused.
func TestEmbeddedTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := certtest.SelfSigned(t, "registry test")
	e := startEmbedded(t, EmbeddedConfig{CertFile: certFile, KeyFile: keyFile, Username: "u", Password: "p"})
	if !strings.HasPrefix(e.URL(), "https://") {
		t.Fatalf("URL %s: want https://", e.URL())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cl, err := NewClient(ClientConfig{URL: e.URL(), Username: "u", Password: "p", CAFile: certFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: `"string"`}); err != nil {
		t.Fatalf("register over TLS: %v", err)
	}
	untrusting, err := NewClient(ClientConfig{URL: e.URL(), Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.Subjects(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("client without the CA: got %v, want a certificate error", err)
	}
	plain, err := NewClient(ClientConfig{URL: "http://" + strings.TrimPrefix(e.URL(), "https://"), Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Subjects(ctx); err == nil {
		t.Errorf("plain HTTP to the TLS registry: got no error")
	}
	if _, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", CertFile: certFile}); err == nil || !strings.Contains(err.Error(), "registry.key_file") {
		t.Errorf("cert without key: got %v, want an error naming registry.key_file", err)
	}
}
