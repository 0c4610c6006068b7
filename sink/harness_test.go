package sink

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/registry"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// testTimeout bounds every wait: on a loaded 2-core machine a batch takes
// well under a second, so reaching it means something is stuck.
const testTimeout = 45 * time.Second

// env is an in-process broker (kfake) and an embedded registry.
type env struct {
	t       *testing.T
	brokers []string
	reg     *sr.Client
	regURL  string      // the embedded registry's address
	cl      *kgo.Client // producer
	kc      *kfake.Cluster
}

func newEnv(t *testing.T) *env {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(kc.Close)
	emb, err := registry.StartEmbedded(t.Context(), registry.EmbeddedConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("embedded registry: %v", err)
	}
	t.Cleanup(func() { emb.Close(context.Background()) })
	reg, err := registry.NewClient(registry.ClientConfig{URL: emb.URL()})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &env{t: t, brokers: kc.ListenAddrs(), reg: reg, regURL: emb.URL(), cl: cl, kc: kc}
}

// topicW writes Confluent-framed Avro records to one topic.
type topicW struct {
	e          *env
	name       string
	key, value avro.Schema
	keyID      int
	valueID    int
}

// topic creates a topic with 3 partitions and registers its schemas.
func (e *env) topic(name, keySchema, valueSchema string) *topicW {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), testTimeout)
	defer cancel()
	if _, err := kadm.NewClient(e.cl).CreateTopic(ctx, 3, 1, nil, name); err != nil {
		e.t.Fatalf("create topic %s: %v", name, err)
	}
	w := &topicW{e: e, name: name}
	w.keyID, w.key = e.register(name+"-key", keySchema)
	w.valueID, w.value = e.register(name+"-value", valueSchema)
	return w
}

func (e *env) register(subject, schema string) (int, avro.Schema) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), testTimeout)
	defer cancel()
	id, err := registry.Register(ctx, e.reg, subject, schema)
	if err != nil {
		e.t.Fatalf("register %s: %v", subject, err)
	}
	s, err := parseSchema(schema)
	if err != nil {
		e.t.Fatal(err)
	}
	return id, s
}

// evolve registers a new value schema for later puts.
func (w *topicW) evolve(valueSchema string) {
	w.valueID, w.value = w.e.register(w.name+"-value", valueSchema)
}

// evolveKey registers a new key schema for later puts and tombstones.
func (w *topicW) evolveKey(keySchema string) {
	w.keyID, w.key = w.e.register(w.name+"-key", keySchema)
}

func frame(t *testing.T, id int, s avro.Schema, v any) []byte {
	t.Helper()
	var h sr.ConfluentHeader
	b, _ := h.AppendEncode(nil, id, nil)
	body, err := avro.Config{}.Freeze().Marshal(s, v)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return append(b, body...)
}

func (w *topicW) put(key, value map[string]any) {
	w.e.t.Helper()
	w.produce(&kgo.Record{Topic: w.name, Key: frame(w.e.t, w.keyID, w.key, key), Value: frame(w.e.t, w.valueID, w.value, value)})
}

func (w *topicW) del(key map[string]any) {
	w.e.t.Helper()
	w.produce(&kgo.Record{Topic: w.name, Key: frame(w.e.t, w.keyID, w.key, key)})
}

func (w *topicW) raw(key, value []byte) {
	w.e.t.Helper()
	w.produce(&kgo.Record{Topic: w.name, Key: key, Value: value})
}

// produce writes r (to partition r.Partition: the tests choose it) and
// returns it with its offset.
func (w *topicW) produce(r *kgo.Record) *kgo.Record {
	w.e.t.Helper()
	ctx, cancel := context.WithTimeout(w.e.t.Context(), testTimeout)
	defer cancel()
	if err := w.e.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		w.e.t.Fatalf("produce to %s: %v", w.name, err)
	}
	return r
}

// running is a Sink running in the background until the test ends.
type running struct {
	s    *Sink
	stop func() error
	done chan error
}

// stopWhenDone waits for Run to return by itself.
func (r *running) stopWhenDone() error {
	err := <-r.done
	r.done <- err // for stop
	return err
}

// start runs a sink for model on storeURL; its Run error is returned by
// stop (called at cleanup too). opts change the sink's Config.
func (e *env) start(model ReadModel, storeURL string, opts ...func(*Config)) *running {
	e.t.Helper()
	cfg := Config{Model: model, StoreURL: storeURL, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 500,
		Logger: slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(testTimeout):
				runErr = fmt.Errorf("Run did not return within %v of the stop", testTimeout)
			}
		})
		return runErr
	}
	e.t.Cleanup(func() { _ = stop() })
	return &running{s: s, stop: stop, done: done}
}

// waitRecords polls until the sink has consumed at least n records.
func (r *running) waitRecords(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for r.s.Stats().Records < n {
		if time.Now().After(deadline) {
			t.Fatalf("sink consumed %d records within %v, want %d (stats %+v)", r.s.Stats().Records, testTimeout, n, r.s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rows returns the table's rows rendered as text, sorted.
func rows(t *testing.T, storeURL, table string, cols ...string) []string {
	t.Helper()
	db, d, err := openStore(storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := fmt.Sprintf("SELECT %s FROM %s", quoteList(d, cols), d.quote(table))
	res, err := db.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer res.Close()
	var out []string
	for res.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := res.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			switch x := v.(type) {
			case nil:
				parts[i] = "NULL"
			case []byte:
				parts[i] = string(x)
			case time.Time:
				parts[i] = x.UTC().Format(time.RFC3339Nano)
			default:
				parts[i] = fmt.Sprint(x)
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func wantRows(t *testing.T, storeURL, table string, cols []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	got := rows(t, storeURL, table, cols...)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table %s:\ngot  %q\nwant %q", table, got, want)
	}
}

// eachStore runs f as a parallel subtest per store (SQLite, PostgreSQL,
// MariaDB), each with a fresh store, an env of its own and topic customers.
func eachStore(t *testing.T, f func(t *testing.T, sk storeKind, store string, e *env, w *topicW)) {
	t.Helper()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			f(t, sk, store, e, e.topic("customers", customersKey, customersValue))
		})
	}
}

// stores are the databases the conformance suite runs against: each
// returns a fresh, empty store URL.
type storeKind struct {
	name  string
	fresh func(t *testing.T) string
}

func sqliteStore() storeKind {
	return storeKind{"sqlite", func(t *testing.T) string {
		return "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	}}
}

// postgresStore starts one cluster for the calling test and hands out a
// database per subtest.
func postgresStore(t *testing.T) storeKind {
	var once sync.Once
	var c *pgcluster.Cluster
	return storeKind{"postgres", func(st *testing.T) string {
		once.Do(func() { c = pgtest.Start(t) })
		name := fmt.Sprintf("read_%d", rand.Uint32())
		if err := c.CreateDatabase(st.Context(), name); err != nil {
			st.Fatalf("create database: %v", err)
		}
		return c.DSN(name)
	}}
}

// mysqlAddr is the MariaDB the tests use (root, no password).
const mysqlAddr = "127.0.0.1:3306"

func mysqlStore() storeKind {
	return storeKind{"mysql", func(t *testing.T) string {
		db, err := sql.Open("mysql", "root@tcp("+mysqlAddr+")/")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			t.Fatalf("MariaDB does not answer on %s as root without password: %v (start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd; install: apt-get install mariadb-server)", mysqlAddr, err)
		}
		name := fmt.Sprintf("sink_test_%d", rand.Uint32())
		if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			db, err := sql.Open("mysql", "root@tcp("+mysqlAddr+")/")
			if err == nil {
				db.Exec("DROP DATABASE " + name)
				db.Close()
			}
		})
		return "mysql://root@" + mysqlAddr + "/" + name
	}}
}
