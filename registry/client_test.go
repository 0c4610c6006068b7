package registry

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

func TestNewClientErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	ts.Close()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		want []string // substrings; nil means no error
	}{
		{"plain", ClientConfig{URL: "http://127.0.0.1:8081"}, nil},
		{"several", ClientConfig{URL: "https://a:8081, https://b:8081", Username: "u", Password: "hunter2"}, nil},
		{"no url", ClientConfig{}, []string{"registry.url"}},
		{"no scheme", ClientConfig{URL: "localhost:8081"}, []string{"registry.url"}},
		{"user in url", ClientConfig{URL: "http://u:hunter2@h:8081"}, []string{"registry.url", "registry.username"}},
		{"password alone", ClientConfig{URL: "http://h:8081", Password: "hunter2"}, []string{"registry.username"}},
		{"ca over https", ClientConfig{URL: "https://h:8081", CAFile: caFile}, nil},
		{"ca over http", ClientConfig{URL: "http://h:8081", CAFile: caFile}, []string{"registry.ca_file", "https://"}},
		{"missing ca", ClientConfig{URL: "https://h:8081", CAFile: filepath.Join(dir, "nope.pem")}, []string{"registry.ca_file"}},
		{"ca not pem", ClientConfig{URL: "https://h:8081", CAFile: notPEM}, []string{"registry.ca_file", "no PEM"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewClient(tc.cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestNewClientBasicAuth(t *testing.T) {
	t.Parallel()
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	reg := srfake.New(srfake.WithAuth(want))
	t.Cleanup(reg.Close)
	for _, tc := range []struct {
		name, user, pass string
		wantStatus       int // 0: success
	}{
		{"right password", "alice", "s3cret", 0},
		{"wrong password", "alice", "nope", http.StatusForbidden},
		{"no credentials", "", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl, err := NewClient(ClientConfig{URL: reg.URL(), Username: tc.user, Password: tc.pass})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Register(t.Context(), cl, "auth-"+tc.name, avroRecord("A", "x"))
			var re *sr.ResponseError
			switch {
			case tc.wantStatus == 0 && err != nil:
				t.Fatalf("Register: %v", err)
			case tc.wantStatus != 0 && (!errors.As(err, &re) || re.StatusCode != tc.wantStatus):
				t.Fatalf("Register: got %v, want HTTP %d", err, tc.wantStatus)
			}
		})
	}
}

func TestNewClientHTTPS(t *testing.T) {
	t.Parallel()
	ts := httptest.NewTLSServer(srfake.NewRegistry().Handler())
	t.Cleanup(ts.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, caFile string
		wantOK       bool
	}{
		{"ca file", caFile, true},
		{"system roots", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl, err := NewClient(ClientConfig{URL: ts.URL, CAFile: tc.caFile})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Register(t.Context(), cl, "tls-"+tc.name, avroRecord("A", "x"))
			if (err == nil) != tc.wantOK {
				t.Fatalf("Register over https: got error %v, want success %v", err, tc.wantOK)
			}
		})
	}
}

// TestRegisterCompatibility makes srfake (which otherwise always says
// compatible) reject every compatibility check, and counts the checks.
func TestRegisterCompatibility(t *testing.T) {
	t.Parallel()
	reg := srfake.New()
	t.Cleanup(reg.Close)
	var checks atomic.Int64
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/compatibility/subjects/orders-value/versions/latest") {
			return false
		}
		checks.Add(1)
		if r.URL.Query().Get("verbose") != "true" {
			t.Errorf("compatibility check without verbose=true: %s", r.URL)
		}
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		_ = json.NewEncoder(w).Encode(sr.CheckCompatibilityResult{Is: false, Messages: []string{"reader field 'total' has no default"}})
		return true
	})
	cl := client(t, reg.URL())

	v1 := avroRecord("Order", "id")
	id := mustRegister(t, cl, "orders-value", v1) // new subject: nothing to check against
	if got := mustRegister(t, cl, "orders-value", v1); got != id {
		t.Fatalf("re-register: got id %d, want %d", got, id)
	}
	if n := checks.Load(); n != 0 {
		t.Fatalf("got %d compatibility checks for a new subject and a known schema, want 0", n)
	}

	_, err := Register(t.Context(), cl, "orders-value", avroRecord("Order", "id", "total"))
	var ie *IncompatibleError
	if !errors.As(err, &ie) || ie.Subject != "orders-value" || !strings.Contains(err.Error(), "has no default") {
		t.Fatalf("incompatible schema: got %v, want *IncompatibleError for orders-value with the registry's reason", err)
	}
	if vs, _ := cl.SubjectVersions(t.Context(), "orders-value"); len(vs) != 1 {
		t.Fatalf("versions after a rejected schema: got %v, want only 1", vs)
	}
}
