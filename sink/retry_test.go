package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/registry"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		attempt int
		want    time.Duration
	}{
		{1, 200 * time.Millisecond},
		{2, 400 * time.Millisecond},
		{5, 3200 * time.Millisecond},
		{8, 25600 * time.Millisecond},
		{9, 30 * time.Second},
		{100, 30 * time.Second},
	} {
		if got := retryDelay(c.attempt); got != c.want {
			t.Errorf("retryDelay(%d): got %v, want %v", c.attempt, got, c.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("begin: %w", refused), true},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"bad password", &pgconn.PgError{Code: "28P01"}, false},
		{"registry 503", fmt.Errorf("fetch schema id 3: %w", &sr.ResponseError{StatusCode: 503}), true},
		{"registry 429", &sr.ResponseError{StatusCode: 429}, true},
		{"registry 401", &sr.ResponseError{StatusCode: 401}, false},
		{"registry unreachable", &url.Error{Op: "Get", URL: "http://127.0.0.1:1", Err: refused}, true},
		{"poison, whatever its cause", &PoisonError{Err: refused}, false},
		{"undecodable", fmt.Errorf("%w: bad framing", errUndecodable), false},
		{"schema", &SchemaError{Subject: "s", ID: 1, Msg: "gone"}, false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable(%v): got %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// Only a failure that ended the connection can make a batch a suspect
// (TestBatchEndingItsConnectionIsSplit): lock contention leaves the
// connection up and is always waited out.
func TestConnectionEnded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"terminated", &pgconn.PgError{Code: "57P01"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"broken pipe", &net.OpError{Op: "write", Net: "tcp", Err: errors.New("broken pipe")}, true},
		{"eof", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"MariaDB connection killed", &mysql.MySQLError{Number: 1927}, true},
		// A packet over max_allowed_packet: the server answers 1153 and the
		// batch is split at once as any refused batch, no suspicion needed.
		{"MariaDB packet too large", &mysql.MySQLError{Number: 1153, SQLState: [5]byte{'0', '8', 'S', '0', '1'}}, false},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, false},
		{"lock wait timeout", &mysql.MySQLError{Number: 1205}, false},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
	} {
		if got := connectionEnded(c.err); got != c.want {
			t.Errorf("%s: connectionEnded(%v): got %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// TestStoreRestartRidesOut stops the PostgreSQL store under a running sink
// and starts it again: the sink retries instead of stopping, resumes from
// the stored offsets, and converges; a trigger counting applications per
// (key, version) proves no batch was applied twice.
func TestStoreRestartRidesOut(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*testTimeout)
	defer cancel()
	if err := c.CreateDatabase(ctx, "read_restart"); err != nil {
		t.Fatal(err)
	}
	store := c.DSN("read_restart")
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	const keys = 300
	for k := int64(1); k <= keys; k++ {
		w.put(cust(k, "v0", nil))
	}
	r := e.start(customerModel("profile"), store)
	r.waitRecords(t, keys)

	db, err := sql.Open("pgx", store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE TABLE applied (customer_id bigint, display_name text)`,
		`CREATE FUNCTION count_applied() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO applied VALUES (NEW.customer_id, NEW.display_name); RETURN NEW; END $$`,
		`CREATE TRIGGER count_applied AFTER INSERT OR UPDATE ON profile FOR EACH ROW EXECUTE FUNCTION count_applied()`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// Round 1 is being applied when the store stops; round 2 arrives while
	// it is down; round 3 after it is back.
	round := func(n int) {
		for k := int64(1); k <= keys; k++ {
			w.put(cust(k, fmt.Sprint("v", n), nil))
		}
	}
	round(1)
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	round(2)
	waitRetries(t, r, 3)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	round(3)

	want := make([]string, 0, keys)
	for k := 1; k <= keys; k++ {
		want = append(want, fmt.Sprintf("%d|v3|NULL", k))
	}
	sort.Strings(want) // as rows returns them
	deadline := time.Now().Add(testTimeout)
	for {
		got := rows(t, store, "profile", profileCols...)
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the read model did not converge within %v after the store came back (stats %+v, state %s); %d rows, first %q", testTimeout, r.s.Stats(), r.s.State(), len(got), got[:min(3, len(got))])
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The test's own pooled connection died with the restart.
	db.Close()
	if db, err = sql.Open("pgx", store); err != nil {
		t.Fatal(err)
	}
	var twice int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM applied GROUP BY customer_id, display_name HAVING count(*) > 1) d`).Scan(&twice); err != nil {
		t.Fatal(err)
	}
	if twice != 0 {
		t.Errorf("%d (key, version) pairs applied more than once, want none", twice)
	}
	if st := r.s.State(); st != StateRunning {
		t.Errorf("state after the outage: got %s, want running", st)
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// flakyRegistry is the embedded registry behind a proxy that answers 503
// while down is set.
type flakyRegistry struct {
	down   atomic.Bool
	served atomic.Int64 // 503s answered
	url    string
}

func newFlakyRegistry(t *testing.T, e *env) (*flakyRegistry, *sr.Client) {
	t.Helper()
	target, err := url.Parse(e.regURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyRegistry{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			f.served.Add(1)
			http.Error(w, `{"error_code":50003,"message":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	cl, err := registry.NewClient(registry.ClientConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return f, cl
}

// A registry answering 503 for a while (a new schema id to fetch) holds the
// read model back without stopping it; it applies once the registry is
// back. With give_up_after, it stops after that long, naming the cause.
func TestRegistryOutage(t *testing.T) {
	t.Parallel()
	v2 := `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null},{"name":"extra","type":"string","default":""}]}`
	for _, c := range []struct {
		name        string
		giveUpAfter time.Duration
	}{
		{"recovers", 0},
		{"give up after", time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			w.put(cust(1, "ann", "gold"))
			f, reg := newFlakyRegistry(t, e)
			r := e.start(customerModel("profile"), store, func(cfg *Config) {
				cfg.Registry = reg
				cfg.GiveUpAfter = c.giveUpAfter
			})
			r.waitRecords(t, 1)

			f.down.Store(true)
			w.evolve(v2) // registered directly: the sink must fetch the new id through the proxy
			w.put(map[string]any{"id": int64(2)}, map[string]any{"id": int64(2), "name": "bob", "tier": nil, "extra": "x"})
			if c.giveUpAfter > 0 {
				err := waitStopped(t, r)
				if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "read model profile") {
					t.Fatalf("Run: got %v, want the read model to give up naming give_up_after and the registry's 503", err)
				}
				wantRows(t, store, "profile", profileCols, "1|ann|gold")
				return
			}
			waitRetries(t, r, 3)
			f.down.Store(false)
			r.waitRecords(t, 2)
			wantRows(t, store, "profile", profileCols, "1|ann|gold", "2|bob|NULL")
			if err := r.stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// A rebuild's errors name the read model the user asked to rebuild, not
// its shadow (<name>__rebuild).
func TestRebuildErrorsNameTheReadModel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", "gold"))
	m := customerModel("profile")
	m.Sources[0].Columns = append(m.Sources[0].Columns, Column{Name: "nick", Field: "nickname"}) // a field the records lack
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	err := Rebuild(t.Context(), Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}, nil)
	if err == nil || !strings.Contains(err.Error(), "read model profile:") || strings.Contains(err.Error(), rebuildSuffix) || !strings.Contains(err.Error(), "nickname") {
		t.Fatalf("Rebuild: got %v, want an error naming read model profile (not profile%s) and the field", err, rebuildSuffix)
	}
}

// A SQLite store in a directory that does not exist says so, with the
// path and the fix, instead of SQLite's "unable to open database file".
func TestSQLiteStoreMissingDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "no", "such")
	_, _, err := openStore("sqlite://" + filepath.Join(dir, "read.db"))
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "mkdir -p") {
		t.Fatalf("openStore: got %v, want the missing directory %s named with the fix", err, dir)
	}
	e := newEnv(t)
	r := e.start(customerModel("profile"), "sqlite://"+filepath.Join(dir, "read.db"))
	if err := waitStopped(t, r); err == nil || !strings.Contains(err.Error(), "read model profile") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Run: got %v, want the read model and the directory named", err)
	}
}

// cutProxy forwards TCP connections to a store. cut closes every open
// connection and, until heal, closes new ones at once: a store restarting
// or a network drop, for a store the test cannot restart (the shared
// MariaDB).
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the pipes
	mu     sync.Mutex     // guards conns and down
	conns  map[net.Conn]struct{}
	down   bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go p.pipe(c)
	}
}

// track registers c, or closes it while the proxy is down.
func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) pipe(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil || !p.track(s) {
		c.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); done <- struct{}{} }()
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done
	c.Close()
	s.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestStoreConnectionsCut cuts every connection to the store under a
// running sink and refuses new ones for a while, in PostgreSQL and
// MariaDB: the read model waits and converges once the store is
// reachable again.
func TestStoreConnectionsCut(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			direct := sk.fresh(t)
			u, err := url.Parse(direct)
			if err != nil {
				t.Fatal(err)
			}
			p := newCutProxy(t, u.Host)
			u.Host = p.ln.Addr().String()
			store := u.String()
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			const keys = 200
			round := func(n int) {
				for k := int64(1); k <= keys; k++ {
					w.put(cust(k, fmt.Sprint("v", n), nil))
				}
			}
			round(0)
			r := e.start(customerModel("profile"), store)
			r.waitRecords(t, keys)
			round(1)
			p.cut()
			round(2)
			waitRetries(t, r, 3)
			// Still running, records waiting: /healthz's stall watchdog
			// (metrics) fires after metrics.stall_timeout, not at once.
			lag := int64(0)
			for _, pp := range r.s.Partitions() {
				lag += pp.Lag()
			}
			if lag == 0 {
				t.Errorf("lag while the store is cut: got 0, want the waiting records (partitions %+v)", r.s.Partitions())
			}
			p.heal()
			round(3)
			want := make([]string, 0, keys)
			for k := 1; k <= keys; k++ {
				want = append(want, fmt.Sprintf("%d|v3|NULL", k))
			}
			sort.Strings(want)
			deadline := time.Now().Add(testTimeout)
			for {
				got := rows(t, direct, "profile", profileCols...)
				if strings.Join(got, "\n") == strings.Join(want, "\n") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the read model did not converge within %v after the store came back (stats %+v, state %s); %d rows", testTimeout, r.s.Stats(), r.s.State(), len(got))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := r.stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// waitRetries polls until the sink has retried n times, failing at once if
// it stopped instead.
func waitRetries(t *testing.T, r *running, n int64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for r.s.Stats().Retries < n {
		if st := r.s.State(); st != StateRunning {
			t.Fatalf("the read model is %s while its store or registry is unavailable, want running (stats %+v)", st, r.s.Stats())
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d retries within %v of the outage (stats %+v)", n, testTimeout, r.s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A poison record dead-lettered by a batch that then meets an outage (a
// schema id to fetch while the registry answers 503) is dead-lettered once,
// not once per attempt: the retry rolls back the batch's rows, not its
// dead letters.
func TestDeadLetterOnceAcrossRetries(t *testing.T) {
	t.Parallel()
	v2 := `{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null},{"name":"extra","type":"string","default":""}]}`
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", "gold"))
	f, reg := newFlakyRegistry(t, e)
	m := customerModel("profile")
	m.OnError, m.DeadLetterTopic = DeadLetter, "profile.dlq"
	r := e.start(m, store, func(cfg *Config) { cfg.Registry = reg })
	r.waitRecords(t, 1)

	f.down.Store(true)
	w.evolve(v2) // registered directly: the sink must fetch the new id through the proxy
	poison := &kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(2)}), Value: []byte("not avro")}
	next := &kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(3)}),
		Value: frame(t, w.valueID, w.value, map[string]any{"id": int64(3), "name": "cy", "tier": nil, "extra": "x"})}
	// One produce, one record batch: the sink polls both at once.
	if err := e.cl.ProduceSync(t.Context(), poison, next).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitRetries(t, r, 3)
	f.down.Store(false)
	r.waitRecords(t, 3)
	wantRows(t, store, "profile", profileCols, "1|ann|gold", "3|cy|NULL")
	if got := r.s.Stats().DeadLettered; got != 1 {
		t.Errorf("dead-lettered %d records, want 1", got)
	}
	ends, err := broker.EndOffsets(t.Context(), kadm.NewClient(e.cl), "profile.dlq")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, o := range ends {
		n += o
	}
	if n != 1 {
		t.Errorf("the dead-letter topic holds %d records after %d retries, want 1", n, r.s.Stats().Retries)
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The first offset's INSERT failing because the connection was lost is an
// outage to retry, not a fence: a fence reloads the offsets, and a rebuild
// would then apply the batch it decoded ahead past the one rolled back.
func TestFirstOffsetLostConnectionIsNotAFence(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	st := openTestStore(t, url)
	db := st.db
	ctx := t.Context()
	if err := st.ensureSinkTables(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var pid int
	if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	// With a timeout, pg_terminate_backend waits until the backend is gone.
	if _, err := db.ExecContext(ctx, "SELECT pg_terminate_backend($1, 10000)", pid); err != nil {
		t.Fatal(err)
	}
	k := tp{"customers", 0}
	err = st.casOffsets(ctx, tx, "profile", map[tp]int64{k: -1}, map[tp]int64{k: 10})
	if err == nil || errors.Is(err, errFenced) || !isTransient(err) {
		t.Fatalf("casOffsets on a lost connection: got %v, want a transient error that is not a fence", err)
	}
}

// A record whose own statement ends the store's connection (here a
// trigger that terminates its backend) is not an outage: the store answers at once each
// time. After a few attempts the batch is split and the record meets
// on_error, instead of the batch being retried forever.
func TestBatchEndingItsConnectionIsSplit(t *testing.T) {
	t.Parallel()
	sk := postgresStore(t)
	for _, mode := range []OnError{Stop, DeadLetter} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			w.put(cust(1, "ann", nil))
			m := customerModel("profile")
			m.OnError = mode
			if mode == DeadLetter {
				m.DeadLetterTopic = "profile.dlq"
			}
			r := e.start(m, store)
			r.waitRecords(t, 1)
			db, _, err := openStore(store)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(t.Context(), `CREATE FUNCTION end_own_session() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN
					IF NEW.display_name = 'ends its connection' THEN
						PERFORM pg_terminate_backend(pg_backend_pid());
					END IF;
					RETURN NEW;
				END $$;
				CREATE TRIGGER end_own_session BEFORE INSERT OR UPDATE ON profile
					FOR EACH ROW EXECUTE FUNCTION end_own_session();`); err != nil {
				t.Fatal(err)
			}
			bad := w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(2)}),
				Value: frame(t, w.valueID, w.value, map[string]any{"id": int64(2), "name": "ends its connection", "tier": nil})})
			w.put(cust(3, "cy", nil))
			if mode == Stop {
				err := waitStopped(t, r)
				var pe *PoisonError
				if !errors.As(err, &pe) || pe.Offset != bad.Offset || pe.Partition != bad.Partition {
					t.Fatalf("Run: got %v, want a PoisonError at customers/%d/%d", err, bad.Partition, bad.Offset)
				}
				if !strings.Contains(err.Error(), "ended the store's connection 3 times in a row while the store answered") {
					t.Errorf("Run: %v does not say the record ended the connection while the store answered", err)
				}
				wantRows(t, store, "profile", profileCols, "1|ann|NULL")
				return
			}
			r.waitRecords(t, 3)
			wantRows(t, store, "profile", profileCols, "1|ann|NULL", "3|cy|NULL")
			if got := r.s.Stats().DeadLettered; got != 1 {
				t.Errorf("dead-lettered %d records, want 1", got)
			}
			if err := r.stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// A batch fenced by stored offsets that moved only within its own records
// (what its retry finds after an earlier attempt's COMMIT went through
// while the reply was lost with the connection) is told apart from one
// whose partitions another process moved elsewhere.
func TestFenceWithinBatch(t *testing.T) {
	a, b := tp{"customers", 0}, tp{"customers", 1}
	before := map[tp]int64{a: 5, b: 3}
	next := map[tp]int64{a: 10, b: 7}
	for _, c := range []struct {
		name   string
		stored map[tp]int64 // reloaded after the fence
		want   bool
	}{
		{"all where the batch leaves them", map[tp]int64{a: 10, b: 7}, true},
		{"part of the batch (a split batch's records)", map[tp]int64{a: 8, b: 3}, true},
		{"one moved past the batch", map[tp]int64{a: 12, b: 7}, false},
		{"one moved back", map[tp]int64{a: 4, b: 7}, false},
		{"a partition no longer assigned", map[tp]int64{b: 7}, false},
		{"nothing moved", map[tp]int64{a: 5, b: 3}, false},
	} {
		if got := withinBatch(before, c.stored, next); got != c.want {
			t.Errorf("%s: withinBatch(%v, %v, %v) = %v, want %v", c.name, before, c.stored, next, got, c.want)
		}
	}
}

// TestLagWhileABatchWaits: records produced while a batch waits for its
// store (here a writer holding the SQLite file) count as lag although the
// poll loop fetches nothing meanwhile; without the listed ends the lag
// stayed at the waiting batch's records.
func TestLagWhileABatchWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	path := filepath.Join(t.TempDir(), "read.db")
	w.put(cust(1, "ann", nil))
	r := e.start(customerModel("profile"), "sqlite://"+path)
	r.waitRecords(t, 1)

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("lock the store's file: %v", err)
	}
	w.put(cust(2, "bob", nil))
	deadline := time.Now().Add(testTimeout)
	for r.s.batchSince.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no batch began within %v of the record (stats %+v)", testTimeout, r.s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The batch waits on the lock: these are not fetched until it ends.
	for i, part := range []int32{1, 2, 2, 1, 2} {
		k, v := cust(int64(10+i), "later", nil)
		w.produce(&kgo.Record{Topic: w.name, Partition: part, Key: frame(t, w.keyID, w.key, k), Value: frame(t, w.valueID, w.value, v)})
	}
	lag := func() int64 {
		n := int64(0)
		for _, p := range r.s.Partitions() {
			n += p.Lag()
		}
		return n
	}
	for lag() != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("lag %d while the batch waits, want 6 (1 waiting, 5 produced since; partitions %+v)", lag(), r.s.Partitions())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := lock.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	r.waitRecords(t, 7)
	for lag() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lag %d once the store is free, want 0 (partitions %+v)", lag(), r.s.Partitions())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestEndsAfterAListing: the fetch kgo buffered while a batch held the
// poll loop carries ends older than those listed meanwhile: taking them
// would show too little lag (none, with records unapplied) until the next
// fetch. Later fetches are taken as they are, and a partition assigned
// again learns its end anew.
func TestEndsAfterAListing(t *testing.T) {
	s := &Sink{expected: map[tp]int64{{"c", 0}: 5}, ends: map[tp]int64{}, log: slog.New(slog.DiscardHandler)}
	fetch := func(hw int64) kgo.Fetches {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "c", Partitions: []kgo.FetchPartition{{Partition: 0, HighWatermark: hw}}}}}}
	}
	s.noteEnds(fetch(6))
	s.raiseEnds(kadm.ListedOffsets{"c": {0: {Topic: "c", Partition: 0, Offset: 20}}})
	s.noteEnds(fetch(8)) // buffered before the listing
	if got := s.Partitions()[0].Lag(); got != 15 {
		t.Errorf("lag after an older fetch: %d, want 15 (end 20 listed, 5 stored)", got)
	}
	// Fetches after that one are current: a lower end (the log cut back)
	// is taken, or the lag would stay up and /healthz fail.
	s.noteEnds(fetch(21))
	s.noteEnds(fetch(12))
	if got := s.Partitions()[0].Lag(); got != 7 {
		t.Errorf("lag after a fetch with a lower end: %d, want 7 (end 12, 5 stored)", got)
	}
	s.drop(t.Context(), nil, map[string][]int32{"c": {0}}, "revoked")
	s.expected[tp{"c", 0}] = 5
	s.noteEnds(fetch(8))
	if got := s.Partitions()[0].Lag(); got != 3 {
		t.Errorf("lag of a partition assigned again: %d, want 3 (its first fetch's end 8)", got)
	}
}
