package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// avroRecord returns a distinct Avro record schema per name and field list.
func avroRecord(name string, fields ...string) string {
	fs := make([]string, len(fields))
	for i, f := range fields {
		fs[i] = fmt.Sprintf(`{"name":%q,"type":["null","string"],"default":null}`, f)
	}
	return fmt.Sprintf(`{"type":"record","name":%q,"fields":[%s]}`, name, strings.Join(fs, ","))
}

func startEmbedded(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	e, err := StartEmbedded(t.Context(), cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func client(t *testing.T, url string) *sr.Client {
	t.Helper()
	cl, err := NewClient(ClientConfig{URL: url})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return cl
}

func mustRegister(t *testing.T, cl *sr.Client, subject, schema string) int {
	t.Helper()
	id, err := Register(t.Context(), cl, subject, schema)
	if err != nil {
		t.Fatalf("Register %s: %v", subject, err)
	}
	return id
}

func logLines(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func TestEmbeddedRegister(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	cl := client(t, e.URL())

	a := mustRegister(t, cl, "orders-value", avroRecord("Order", "id"))
	if again := mustRegister(t, cl, "orders-value", avroRecord("Order", "id")); again != a {
		t.Fatalf("same schema again: got id %d, want %d", again, a)
	}
	b := mustRegister(t, cl, "orders-value", avroRecord("Order", "id", "note"))
	if b == a {
		t.Fatalf("evolved schema: got id %d, the id of the first schema", b)
	}
	if other := mustRegister(t, cl, "archive-value", avroRecord("Order", "id")); other != a {
		t.Fatalf("equal schema in another subject: got id %d, want the shared id %d", other, a)
	}
	vs, err := cl.SubjectVersions(t.Context(), "orders-value")
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions: got %v, %v; want 2 versions", vs, err)
	}
}

func TestEmbeddedRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	type reg struct {
		subject, schema string
	}
	regs := []reg{
		{"orders-key", avroRecord("OrderKey", "id")},
		{"orders-value", avroRecord("Order", "id")},
		{"orders-value", avroRecord("Order", "id", "note")},
		{"archive-value", avroRecord("Order", "id")}, // shares an id with orders-value v1
		{"customers-value", avroRecord("Customer", "id")},
	}

	first, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cl := client(t, first.URL())
	ids := make([]int, len(regs))
	maxID := 0
	for i, r := range regs {
		ids[i] = mustRegister(t, cl, r.subject, r.schema)
		maxID = max(maxID, ids[i])
	}
	mustRegister(t, cl, "orders-value", regs[1].schema) // idempotent: no new line
	if got := logLines(t, dir); got != len(regs) {
		t.Fatalf("schema log: got %d lines, want %d (one per new version)", got, len(regs))
	}
	if err := first.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	second := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	if tr := second.Truncated(); tr != nil {
		t.Fatalf("clean restart reported %v", tr)
	}
	cl = client(t, second.URL())
	for i, r := range regs {
		if got := mustRegister(t, cl, r.subject, r.schema); got != ids[i] {
			t.Errorf("after restart %s: got id %d, want %d", r.subject, got, ids[i])
		}
	}
	ss, err := cl.SchemaByVersion(t.Context(), "orders-value", 2)
	if err != nil || ss.ID != ids[2] || ss.Schema.Schema != regs[2].schema {
		t.Fatalf("orders-value v2 after restart: got %+v, %v; want id %d and the same text", ss, err, ids[2])
	}
	fresh := mustRegister(t, cl, "orders-value", avroRecord("Order", "id", "note", "total"))
	if fresh <= maxID {
		t.Fatalf("new schema after restart: got id %d, want one above %d (ids must not be reused)", fresh, maxID)
	}
	if got := logLines(t, dir); got != len(regs)+1 {
		t.Fatalf("schema log: got %d lines, want %d", got, len(regs)+1)
	}
}

func TestEmbeddedTornTail(t *testing.T) {
	t.Parallel()
	good := `{"subject":"a-value","version":1,"id":1,"schema":` + strQuote(avroRecord("A", "x")) + "}\n" +
		`{"subject":"b-value","version":1,"id":2,"schema":` + strQuote(avroRecord("B", "x")) + "}\n"
	for _, tc := range []struct {
		name, tail string
	}{
		{"partial write", `{"subject":"c-value","vers`},
		{"zero-filled block", "\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"bad last line", "{\"subject\":\"c-value\"}\n"},
		{"garbage line", "not json\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, logFile)
			if err := os.WriteFile(path, []byte(good+tc.tail), 0o600); err != nil {
				t.Fatal(err)
			}
			e := startEmbedded(t, EmbeddedConfig{DataDir: dir})
			tr := e.Truncated()
			if tr == nil || tr.Line != 3 || tr.Offset != int64(len(good)) {
				t.Fatalf("Truncated: got %+v, want line 3 at offset %d", tr, len(good))
			}
			if b, _ := os.ReadFile(path); string(b) != good {
				t.Fatalf("log after start: got %q, want the good records only", b)
			}
			cl := client(t, e.URL())
			if id := mustRegister(t, cl, "b-value", avroRecord("B", "x")); id != 2 {
				t.Fatalf("replayed schema: got id %d, want 2", id)
			}
			if id := mustRegister(t, cl, "c-value", avroRecord("C", "x")); id != 3 {
				t.Fatalf("new schema: got id %d, want 3", id)
			}
			if got := logLines(t, dir); got != 3 {
				t.Fatalf("log: got %d lines, want 3", got)
			}
		})
	}
}

func strQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestEmbeddedReplayErrors(t *testing.T) {
	t.Parallel()
	line := func(subject string, version, id int, schema string) string {
		return fmt.Sprintf(`{"subject":%q,"version":%d,"id":%d,"schema":%s}`+"\n", subject, version, id, strQuote(schema))
	}
	a, b := avroRecord("A", "x"), avroRecord("B", "x")
	for _, tc := range []struct {
		name, log, want string // want empty: starts fine
	}{
		{"corrupt middle line", line("a", 1, 1, a) + "{oops\n" + line("b", 1, 2, b), "line 2"},
		{"duplicate line skipped", line("a", 1, 1, a) + line("a", 1, 1, a) + line("b", 1, 2, b), ""},
		{"conflicting id", line("a", 1, 1, a) + line("a", 1, 2, b) + line("b", 1, 3, b), "line 2"},
		{"invalid schema", line("a", 1, 1, "{not json") + line("b", 1, 2, b), "line 1"},
		{"gap in ids kept", line("a", 1, 1, a) + line("b", 1, 5, b), ""}, // ids burnt by failed fsyncs
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, logFile), []byte(tc.log), 0o600); err != nil {
				t.Fatal(err)
			}
			e, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got error %v, want one naming %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("StartEmbedded: %v", err)
			}
			t.Cleanup(func() { e.Close(context.Background()) })
			cl := client(t, e.URL())
			if got, want := mustRegister(t, cl, "b", b), idOf(t, tc.log, "b"); got != want {
				t.Fatalf("b: got id %d, want the logged %d", got, want)
			}
		})
	}
}

// idOf returns the id logged for subject's first version.
func idOf(t *testing.T, log, subject string) int {
	t.Helper()
	for l := range strings.SplitSeq(log, "\n") {
		var r logRecord
		if json.Unmarshal([]byte(l), &r) == nil && r.Subject == subject {
			return r.ID
		}
	}
	t.Fatalf("no record for %s", subject)
	return 0
}

// TestEmbeddedErrorsLikeSrfake sends the same bad registrations to plain
// srfake and to the embedded registry: status and error code must match.
func TestEmbeddedErrorsLikeSrfake(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{DataDir: t.TempDir()})
	plain := srfake.New()
	t.Cleanup(plain.Close)

	for _, tc := range []struct {
		name, subject, body string
	}{
		{"valid", "s", `{"schema":"\"string\""}`},
		{"not json", "s", `{"schema":`},
		{"invalid avro json", "s", `{"schema":"{nope"}`},
		{"unknown field", "s", `{"schema":"\"string\"","bogus":1}`},
		{"two objects", "s", `{"schema":"\"string\""}{}`},
		{"missing reference", "s", `{"schema":"\"string\"","references":[{"name":"X","subject":"nope","version":1}]}`},
		{"unknown type", "s", `{"schema":"\"string\"","schemaType":"THRIFT"}`},
		{"subject too long", strings.Repeat("s", 300), `{"schema":"\"string\""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantStatus, wantCode := post(t, plain.URL(), tc.subject, tc.body)
			gotStatus, gotCode := post(t, e.URL(), tc.subject, tc.body)
			if gotStatus != wantStatus || gotCode != wantCode {
				t.Fatalf("got HTTP %d error_code %d, want srfake's HTTP %d error_code %d", gotStatus, gotCode, wantStatus, wantCode)
			}
		})
	}
}

// post registers body under subject and returns the status and error code.
func post(t *testing.T, base, subject, body string) (status, code int) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/subjects/"+subject+"/versions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Code int `json:"error_code"`
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Code
}

func TestEmbeddedRefusesDelete(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	cl := client(t, e.URL())
	mustRegister(t, cl, "s", avroRecord("S", "x"))
	_, err := cl.DeleteSubject(t.Context(), "s", sr.SoftDelete)
	if !hasCode(err, sr.ErrOperationNotPermitted) {
		t.Fatalf("DeleteSubject: got %v, want error code %d", err, sr.ErrOperationNotPermitted.Code)
	}
	if err := cl.DeleteSchema(t.Context(), "s", 1, sr.SoftDelete); !hasCode(err, sr.ErrOperationNotPermitted) {
		t.Fatalf("DeleteSchema: got %v, want error code %d", err, sr.ErrOperationNotPermitted.Code)
	}
}

func TestEmbeddedListenAndLock(t *testing.T) {
	t.Parallel()
	t.Run("port in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, err = StartEmbedded(t.Context(), EmbeddedConfig{Listen: ln.Addr().String()})
		if err == nil || !strings.Contains(err.Error(), "registry.listen") || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Fatalf("got error %v, want one naming registry.listen and the address", err)
		}
	})
	t.Run("data dir in use", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		startEmbedded(t, EmbeddedConfig{DataDir: dir})
		_, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("got error %v, want 'in use'", err)
		}
	})
}

// TestEmbeddedConcurrentDurable registers from many goroutines, closes, and
// checks after a restart that every acknowledged id is still there.
func TestEmbeddedConcurrentDurable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cl := client(t, e.URL())
	const n = 40
	ids := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = Register(t.Context(), cl, fmt.Sprintf("t%d-value", i%8), avroRecord(fmt.Sprintf("R%d", i), "x"))
		})
	}
	wg.Wait()
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Subjects(t.Context()); err == nil {
		t.Fatal("request after Close succeeded")
	}

	e = startEmbedded(t, EmbeddedConfig{DataDir: dir})
	cl = client(t, e.URL())
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("register %d: %v", i, errs[i])
		}
		s, err := cl.SchemaByID(t.Context(), ids[i])
		if err != nil || s.Schema != avroRecord(fmt.Sprintf("R%d", i), "x") {
			t.Fatalf("id %d after restart: got %q, %v", ids[i], s.Schema, err)
		}
	}
}

// TestEmbeddedFailStop breaks the log under the registry: the registration
// that cannot be persisted fails with a store error, and so does every new
// one after it, while already durable schemas are still answered.
func TestEmbeddedFailStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) }) // errors: the log was closed under it
	cl := client(t, e.URL())
	durable := mustRegister(t, cl, "s", avroRecord("A", "x"))

	e.mu.Lock()
	e.log.Close() // every write and truncate now fails
	e.mu.Unlock()

	for _, schema := range []string{avroRecord("B", "x"), avroRecord("C", "x")} {
		_, err := Register(t.Context(), cl, "s", schema)
		if !hasCode(err, sr.ErrStoreError) {
			t.Fatalf("register with a broken log: got %v, want error code %d", err, sr.ErrStoreError.Code)
		}
	}
	if id := mustRegister(t, cl, "s", avroRecord("A", "x")); id != durable {
		t.Fatalf("durable schema: got id %d, want %d", id, durable)
	}
}
