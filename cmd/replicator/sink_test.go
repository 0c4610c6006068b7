package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/registry"
	"github.com/replicator/replicator/sink"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// sinkFixture is a broker and a registry holding topic customers with two
// records, written as any producer following the topic format would.
func sinkFixture(t *testing.T) (brokers, registryURL string) {
	f := newSinkFixture(t)
	f.put(1, "ann")
	f.put(2, "bob")
	return f.brokers, f.registryURL
}

// sinkFix is sinkFixture's broker and registry, with topic customers empty
// until put.
type sinkFix struct {
	t                    *testing.T
	brokers, registryURL string
	cl                   *kgo.Client
	key, value           func(v any) []byte
}

func newSinkFixture(t *testing.T) *sinkFix {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	emb, err := registry.StartEmbedded(t.Context(), registry.EmbeddedConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close(context.Background()) })
	rcl, err := registry.NewClient(registry.ClientConfig{URL: emb.URL()})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, nil, "customers"); err != nil {
		t.Fatal(err)
	}
	encoder := func(subject, schema string) func(v any) []byte {
		id, err := registry.Register(ctx, rcl, subject, schema)
		if err != nil {
			t.Fatal(err)
		}
		s, err := avro.ParseWithCache(schema, "", &avro.SchemaCache{}) // no global cache
		if err != nil {
			t.Fatal(err)
		}
		api := avro.Config{}.Freeze()
		return func(v any) []byte {
			b, err := api.Marshal(s, v)
			if err != nil {
				t.Fatal(err)
			}
			var h sr.ConfluentHeader
			out, _ := h.AppendEncode(nil, id, nil)
			return append(out, b...)
		}
	}
	return &sinkFix{t: t, brokers: kc.ListenAddrs()[0], registryURL: emb.URL(), cl: cl,
		key:   encoder("customers-key", `{"type":"record","name":"customers_key","fields":[{"name":"id","type":"long"}]}`),
		value: encoder("customers-value", `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}`),
	}
}

// put produces customer id with name.
func (f *sinkFix) put(id int64, name string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.t.Context(), time.Minute)
	defer cancel()
	r := &kgo.Record{Topic: "customers", Key: f.key(map[string]any{"id": id}), Value: f.value(map[string]any{"id": id, "name": name})}
	if err := f.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
}

func sinkConfig(t *testing.T, brokers, registryURL, store string, withBad bool) string {
	models := fmt.Sprintf(`
  - name: good
    store: %q
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name}`, store)
	if withBad {
		models += fmt.Sprintf(`
  - name: bad
    store: %q
    key: id
    sources:
      - entity: nope
        key: id
        columns: {name: name}`, store)
	}
	return writeYAML(t, fmt.Sprintf("kafka:\n  brokers: [%q]\nregistry:\n  url: %q\nread_models:%s\n", brokers, registryURL, models))
}

// TestCheckOfASinkOnlyConfig: check accepts a file without source and
// entities and checks each read model.
func TestCheckOfASinkOnlyConfig(t *testing.T) {
	brokers, registryURL := sinkFixture(t)
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	out, err := runCLI(t, "check", "--config", sinkConfig(t, brokers, registryURL, store, true))
	if err == nil {
		t.Fatalf("check passed with a read model on a missing topic:\n%s", out)
	}
	for _, want := range []string{"(sink only: read_models)", "ok    read model good (read_models[0])", "note: table \"good\" does not exist yet", "FAIL  read model bad (read_models[1])", "topic nope does not exist"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusOfASinkOnlyConfig: status accepts the file `replicator sink`
// reads (no source, no entities) and reports its read models alone.
func TestStatusOfASinkOnlyConfig(t *testing.T) {
	brokers, registryURL := sinkFixture(t)
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	cfg := sinkConfig(t, brokers, registryURL, store, false)
	out, err := runCLI(t, "status", "--config", cfg)
	if err != nil {
		t.Fatalf("status of a sink-only config: %v\n%s", err, out)
	}
	for _, want := range []string{"2 records behind", "customers[0]  none stored, end 2, 2 behind", "ok: nothing needs attention"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	for _, notWant := range []string{"slot", "snapshot", "topics"} {
		if strings.Contains(out, notWant) {
			t.Errorf("status of a sink-only config shows the source's %q:\n%s", notWant, out)
		}
	}
	out, err = runCLI(t, "status", "--config", cfg, "--json", "--max-read-model-lag", "1")
	var exit exitError
	if !errors.As(err, &exit) {
		t.Fatalf("status over --max-read-model-lag: got %v, want a non-zero exit\n%s", err, out)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v: %q", err, out)
	}
	if rep.Slot != nil || len(rep.ReadModels) != 1 || rep.ReadModels[0].Lag != 2 || len(rep.Attention) != 1 {
		t.Errorf("status --json of a sink-only config: %+v", rep)
	}
}

// TestSinkCommand: `replicator sink` builds the read model; a read model
// that cannot start is logged and the other goes on; a stop (the context,
// as SIGTERM) ends it, exiting non-zero because one read model failed.
func TestSinkCommand(t *testing.T) {
	brokers, registryURL := sinkFixture(t)
	store := filepath.Join(t.TempDir(), "read.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var mu sync.Mutex // guards out
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sink", "--config", sinkConfig(t, brokers, registryURL, "sqlite://"+store, true)}, lockedWriter{&mu, &out}, lockedWriter{&mu, &out})
	}()
	db, err := sql.Open("sqlite", "file:"+store+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM good WHERE name IN ('ann', 'bob')`).Scan(&n); err == nil && n == 2 {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("read model good did not get its 2 rows within a minute; output:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("sink did not stop within a minute of the stop")
	}
	mu.Lock()
	defer mu.Unlock()
	if err == nil {
		t.Errorf("sink exited cleanly although read model bad failed; output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), `read model stopped; the others go on" read_model=bad`) {
		t.Errorf("output lacks the failed read model's log line:\n%s", out.String())
	}
}

// TestSinkSlowReadModelStopsOnlyItself: a read model whose store stops
// answering (its SQLite file held locked by another process's transaction)
// waits and retries, and the other read model of the same process goes on
// applying meanwhile; once the store answers again, the first catches up.
func TestSinkSlowReadModelStopsOnlyItself(t *testing.T) {
	f := newSinkFixture(t)
	f.put(1, "ann")
	dir := t.TempDir()
	fast, slow := filepath.Join(dir, "fast.db"), filepath.Join(dir, "slow.db")
	cfg := writeYAML(t, fmt.Sprintf(`kafka:
  brokers: [%q]
registry:
  url: %q
read_models:
  - name: fast
    store: %q
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name}
  - name: slow
    store: %q
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`, f.brokers, f.registryURL, "sqlite://"+fast, "sqlite://"+slow))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var mu sync.Mutex // guards out
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sink", "--config", cfg}, lockedWriter{&mu, &out}, lockedWriter{&mu, &out})
	}()
	open := func(path string) *sql.DB {
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	fastDB, slowDB := open(fast), open(slow)
	rows := func(db *sql.DB, table string) (names []string) {
		r, err := db.Query(`SELECT name FROM ` + table + ` ORDER BY id`)
		if err != nil {
			return nil // not created yet, or locked
		}
		defer r.Close()
		for r.Next() {
			var n string
			if r.Scan(&n) == nil {
				names = append(names, n)
			}
		}
		return names
	}
	waitRows := func(db *sql.DB, table string, want ...string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); strings.Join(rows(db, table), ",") != strings.Join(want, ","); {
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("read model %s: got rows %v, want %v within a minute; output:\n%s", table, rows(db, table), want, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitRows(fastDB, "fast", "ann")
	waitRows(slowDB, "slow", "ann")

	// Another process takes slow's file: the read model cannot write.
	conn, err := slowDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	f.put(2, "bob")
	f.put(3, "cy")
	waitRows(fastDB, "fast", "ann", "bob", "cy")
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM slow`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("slow while its file is locked: got %d rows, %v; want still 1", n, err)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitRows(slowDB, "slow", "ann", "bob", "cy")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			mu.Lock()
			t.Errorf("sink after the stop: %v; output:\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("sink did not stop within a minute of the stop")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestRebuildCommand: `replicator rebuild --read-model` builds the table
// from the topics and swaps it in, logging its progress; an unknown name
// is refused.
func TestRebuildCommand(t *testing.T) {
	brokers, registryURL := sinkFixture(t)
	store := filepath.Join(t.TempDir(), "read.db")
	cfg := sinkConfig(t, brokers, registryURL, "sqlite://"+store, false)
	if out, err := runCLI(t, "rebuild", "--config", cfg, "--read-model", "nope"); err == nil || !strings.Contains(err.Error(), `--read-model "nope": no read model of that name`) {
		t.Errorf("unknown read model: got %v\n%s", err, out)
	}
	out, err := runCLI(t, "rebuild", "--config", cfg, "--read-model", "good")
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if !strings.Contains(out, "read model rebuilt and swapped in") {
		t.Errorf("output lacks the final log line:\n%s", out)
	}
	// Not a terminal: progress is a log line (the first at once), done
	// of total records (every record from the log start) and the rate.
	if !regexp.MustCompile(`msg="rebuild progress" read_model=good done=[12] total=2 rate=\d+ eta=\d+s`).MatchString(out) {
		t.Errorf("output lacks the progress log line (done of total 2, rate, ETA):\n%s", out)
	}
	db, err := sql.Open("sqlite", "file:"+store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM good WHERE name IN ('ann', 'bob')`).Scan(&n); err != nil || n != 2 {
		t.Errorf("table good after the rebuild: %d rows (%v), want 2", n, err)
	}
}

// TestSinkBrokerDown: with no broker answering, `replicator sink` and
// `replicator rebuild` end at once with an error naming the address and
// the fix, instead of consuming nothing, silently, while looking ready
// (sink) or failing after the client's retries with a bare dial error
// (rebuild).
func TestSinkBrokerDown(t *testing.T) {
	t.Parallel()
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	// The registry answers and knows the topic: only the broker is down.
	_, registryURL := sinkFixture(t)
	dead := closedAddr(t)
	wantSinkAndRebuildFail(t, "the broker", []sinkFailCase{
		{"kafka.brokers", fmt.Sprintf("kafka:\n  brokers: [%q]\nregistry:\n  url: %q\n", dead, registryURL) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{"no Kafka broker of kafka.brokers", dead, "check the addresses"}},
		{"embedded", fmt.Sprintf("kafka:\n  listen: %q\nregistry:\n  listen: %q\n", dead, strings.TrimPrefix(registryURL, "http://")) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{dead, "kafka.brokers is empty, so this is the embedded broker of `replicator run` at kafka.listen", "start it with this config first"}},
	})
}

// sinkOnlyModel is a read model of the fixture's customers topic in a
// store given by %q.
const sinkOnlyModel = `
read_models:
  - name: good
    store: %q
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`

// sinkFailCase is a config with which `replicator sink` and `rebuild`
// must fail at once, with an error containing each of wants.
type sinkFailCase struct {
	name, cfg string
	wants     []string
}

// wantSinkAndRebuildFail runs `sink` and `rebuild` with each case's config
// and checks they end within a minute with an error naming what (and
// each of the case's wants), not consuming nothing silently.
func wantSinkAndRebuildFail(t *testing.T, what string, cases []sinkFailCase) {
	t.Helper()
	for _, tc := range cases {
		for _, args := range [][]string{{"sink"}, {"rebuild", "--read-model", "good"}} {
			t.Run(tc.name+"/"+args[0], func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				var out bytes.Buffer
				var mu sync.Mutex // guards out
				err := run(ctx, append(args, "--config", writeYAML(t, tc.cfg)), lockedWriter{&mu, &out}, lockedWriter{&mu, &out})
				if ctx.Err() != nil {
					t.Fatalf("%s still running after a minute; output:\n%s", args[0], out.String())
				}
				if err == nil {
					t.Fatalf("%s: got nil, want an error naming %s; output:\n%s", args[0], what, out.String())
				}
				for _, w := range tc.wants {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q lacks %q", args[0], err, w)
					}
				}
			})
		}
	}
}

// TestSinkRegistryDown: a registry that does not answer, or not at that
// path, ends `replicator sink` and `rebuild` naming the address and the
// setting to fix.
func TestSinkRegistryDown(t *testing.T) {
	t.Parallel()
	brokers, registryURL := sinkFixture(t)
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	dead := closedAddr(t)
	wantSinkAndRebuildFail(t, "the registry", []sinkFailCase{
		{"down", fmt.Sprintf("kafka:\n  brokers: [%q]\nregistry:\n  url: http://%s\n", brokers, dead) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{"the schema registry at http://" + dead + " (registry.url) does not answer", "check the URL"}},
		{"wrong path", fmt.Sprintf("kafka:\n  brokers: [%q]\nregistry:\n  url: %s/prefix\n", brokers, registryURL) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{"the schema registry at " + registryURL + "/prefix (registry.url) does not answer", "its path"}},
		{"embedded", fmt.Sprintf("kafka:\n  listen: %q\nregistry:\n  listen: %q\n", brokers, dead) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{"registry.url is empty, so this is the embedded registry of `replicator run` at registry.listen", dead}},
	})
}

// TestRebuildProgressBar: on a terminal the rebuild's bar shows records
// done of the total, the rate and the ETA, and its final state, once the
// table is swapped in, is full and says done.
func TestRebuildProgressBar(t *testing.T) {
	t.Parallel()
	var bar, logged bytes.Buffer
	report := rebuildProgress("profile", slog.New(slog.NewTextHandler(&logged, nil)), &bar)
	report(sink.Progress{Done: 300, Total: 1000, Elapsed: 3 * time.Second})
	if want := "\rprofile [=========                     ] 300/1000 records, 100/s, ETA 7s "; bar.String() != want {
		t.Errorf("bar during the rebuild:\ngot  %q\nwant %q", bar.String(), want)
	}
	bar.Reset()
	report(sink.Progress{Done: 990, Total: 990, Elapsed: 9 * time.Second, Swapped: true})
	if want := "\rprofile [==============================] 990/990 records, 110/s, done "; bar.String() != want {
		t.Errorf("bar once swapped in:\ngot  %q\nwant %q", bar.String(), want)
	}
	if logged.Len() > 0 {
		t.Errorf("a terminal's progress went to the log too: %s", logged.String())
	}
}

// TestSinkOnlyConfigProblemsAreItsOwn: check and status of a sink-only
// file with a problem in a read model report that problem, not the
// source.url and entities that only `run` needs.
func TestSinkOnlyConfigProblemsAreItsOwn(t *testing.T) {
	t.Parallel()
	path := writeYAML(t, `
read_models:
  - name: profile
    store: "host=db user=app password=hunter2 dbname=read"
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`)
	for _, cmd := range []string{"check", "status"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			out, err := runCLI(t, cmd, "--config", path)
			if err == nil {
				t.Fatalf("%s passed a read model whose store does not parse:\n%s", cmd, out)
			}
			got := out + err.Error()
			if !strings.Contains(got, "read_models[0].store") {
				t.Errorf("%s: got %q, want the read model's store named", cmd, got)
			}
			for _, notWanted := range []string{"source.url", "entities", "hunter2"} {
				if strings.Contains(got, notWanted) {
					t.Errorf("%s: got %q, which names %q: a sink-only file needs no source or entities, and a password is never shown", cmd, got, notWanted)
				}
			}
		})
	}
}

// TestStatusNamesTheReadModelOnce: a read model status cannot read is
// named once in its line and its attention, not once by status and again
// by the error.
func TestStatusNamesTheReadModelOnce(t *testing.T) {
	t.Parallel()
	dead := closedAddr(t)
	path := writeYAML(t, fmt.Sprintf(`
kafka:
  brokers: [%q]
registry:
  url: http://%s
read_models:
  - name: profile
    store: mysql://root@%s/read
    key: id
    sources:
      - entity: customers
        key: id
        columns: {name: name}
`, dead, dead, dead))
	out, err := runCLI(t, "status", "--config", path)
	if err == nil {
		t.Fatalf("status passed a read model whose store does not answer:\n%s", out)
	}
	if !strings.Contains(out, "read model profile: store mysql does not answer") || strings.Contains(out, "read model profile: read model profile") {
		t.Errorf("got:\n%s\nwant the read model named once before its error", out)
	}
}

// TestCheckReadModelsBrokerDown: check of read models whose broker does
// not answer names the setting to fix, as `replicator sink` does, and does
// not blame the store or the registry (both fine here) for the time a
// silent broker took.
func TestCheckReadModelsBrokerDown(t *testing.T) {
	t.Parallel()
	_, registryURL := sinkFixture(t)
	silent := silentAddr(t)
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	dead := closedAddr(t)
	for _, tc := range []struct {
		name, cfg string
		wants     []string
	}{
		{"silent", fmt.Sprintf("kafka:\n  brokers: [%q]\nregistry:\n  url: %q\n", silent, registryURL) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{"FAIL  Kafka of the read models", "no Kafka broker of kafka.brokers", "ok    schema registry of the read models"}},
		{"embedded", fmt.Sprintf("kafka:\n  listen: %q\nregistry:\n  url: %q\n", dead, registryURL) + fmt.Sprintf(sinkOnlyModel, store),
			[]string{"kafka.brokers is empty, so this is the embedded broker of `replicator run` at kafka.listen", "start it with this config first"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := runCLI(t, "check", "--config", writeYAML(t, tc.cfg))
			if err == nil {
				t.Fatalf("check passed with the broker down:\n%s", out)
			}
			for _, w := range tc.wants {
				if !strings.Contains(out, w) {
					t.Errorf("check output lacks %q:\n%s", w, out)
				}
			}
			for _, bad := range []string{"replicator_sink_failures", "read latest schema"} {
				if strings.Contains(out, bad) {
					t.Errorf("check blames the store or registry (%q) for the broker:\n%s", bad, out)
				}
			}
		})
	}
}
