package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// TestRebuildWhileSinkRuns rebuilds a read model while its sink runs and a
// writer produces: a reader querying the table in a loop never sees fewer
// rows than before the rebuild (no empty or partial table), and the final
// table holds the latest record of every key (nothing consumed during the
// rebuild is lost).
func TestRebuildWhileSinkRuns(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		lw := e.topic("loyalty", loyaltyKey, loyaltyValue)
		const keys = 300
		for k := int64(1); k <= keys; k++ {
			w.put(cust(k, "v0", nil))
			lw.put(acct(k, k, k))
		}
		// Two sources: the swap meets a running batch's side rows too.
		m := profileModel()
		r := e.start(m, store)
		r.waitRecords(t, 2*keys)

		// The reader: the table never has fewer rows than keys.
		db, d, err := openStore(store)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		stop := make(chan struct{})
		var reads, bad atomic.Int64
		var lastBad atomic.Value
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var n int64
				if err := db.QueryRow("SELECT count(*) FROM " + d.quote("profile")).Scan(&n); err != nil {
					bad.Add(1)
					lastBad.Store(err.Error())
				} else if n < keys {
					bad.Add(1)
					lastBad.Store(fmt.Sprintf("%d rows", n))
				}
				reads.Add(1)
			}
		}()
		// The writer: new versions while the rebuild runs.
		writeDone := make(chan struct{})
		go func() {
			defer close(writeDone)
			for round := 1; round <= 3; round++ {
				for k := int64(1); k <= keys; k += 7 {
					// Partition 0, as the first versions: one key, one partition.
					w.put(cust(k, fmt.Sprint("v", round), nil))
				}
				for k := int64(1); k <= keys; k += 5 {
					lw.put(acct(k, k, int64(round*1000)+k))
				}
			}
		}()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		var last Progress
		err = Rebuild(ctx, Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 100}, func(p Progress) { last = p })
		<-writeDone
		if err != nil {
			t.Fatalf("Rebuild: %v", err)
		}
		if last.Done == 0 {
			t.Errorf("last progress %+v: want done > 0", last)
		}
		var want []string
		for k := 1; k <= keys; k++ {
			v := "v0"
			if (k-1)%7 == 0 {
				v = "v3"
			}
			points := k
			if (k-1)%5 == 0 {
				points = 3000 + k
			}
			want = append(want, fmt.Sprintf("%d|%s|%d", k, v, points))
		}
		deadline := time.Now().Add(testTimeout)
		for {
			got := rows(t, store, "profile", "customer_id", "display_name", "points")
			if fmt.Sprint(got) == fmt.Sprint(sortedCopy(want)) {
				break
			}
			if time.Now().After(deadline) {
				wantRows(t, store, "profile", []string{"customer_id", "display_name", "points"}, want...)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if bad.Load() > 0 {
			t.Errorf("%d of %d reads during the rebuild saw a missing or partial table (last: %v)", bad.Load(), reads.Load(), lastBad.Load())
		}
		if err := r.stop(); err != nil {
			t.Fatalf("the running sink: %v", err)
		}
	})
}

func sortedCopy(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

// TestRebuildSwapInterruptedMySQL: a rebuild stopped between the steps of
// its MySQL swap (after the offsets went pending, before the rename)
// leaves a state a sink finishes by itself: a running sink, fenced at its
// next batch, and one starting afresh, each end up writing the rebuilt
// table from the rebuild's positions, applying nothing twice and losing
// nothing. The next rebuild finishes it before it starts over (or it would
// drop the rebuilt table the offsets already point into).
func TestRebuildSwapInterruptedMySQL(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"sink running", "sink starting", "rebuild again"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			sinkRunning := mode == "sink running"
			url := mysqlStore().fresh(t)
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			const keys = 50
			for k := int64(1); k <= keys; k++ {
				w.put(cust(k, "v0", nil))
			}
			live := customerModel("profile")
			r := e.start(live, url)
			r.waitRecords(t, keys)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			// Versions the stopped live read model does not have: the
			// rebuild (a shadow read model) reads them all.
			for k := int64(1); k <= keys; k++ {
				w.put(cust(k, "v1", nil))
			}
			shadow := live
			shadow.Name, shadow.Table = live.Name+rebuildSuffix, live.Table+rebuildSuffix
			rs := e.start(shadow, url)
			rs.waitRecords(t, 2*keys)
			if err := rs.stop(); err != nil {
				t.Fatal(err)
			}
			var r2 *running
			if sinkRunning {
				r2 = e.start(live, url)
				r2.waitRecords(t, keys) // the v1 versions, into the live table
			}
			// Step 1 of the swap, and no more: the rebuild "dies" here.
			db, d, err := openStore(url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			st := &store{db: db, d: d}
			mine := map[tp]int64{}
			stored, err := st.loadOffsets(t.Context(), shadow.Name)
			if err != nil {
				t.Fatal(err)
			}
			for p := int32(0); p < 3; p++ {
				mine[tp{"customers", p}] = -1
				if o, ok := stored[tp{"customers", p}]; ok {
					mine[tp{"customers", p}] = o.next
				}
			}
			// The rebuilt table differs from the live one, so that which
			// one the name ends up on shows.
			if _, err := db.Exec("UPDATE " + d.quote(shadow.Table) + " SET " + d.quote("tier") + " = 'rebuilt'"); err != nil {
				t.Fatal(err)
			}
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			if err := st.stagePending(t.Context(), tx, live.Name, shadow.Name, mine); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			tier := "rebuilt"
			if mode == "rebuild again" {
				var first []string
				err := Rebuild(t.Context(), Config{Model: live, StoreURL: url, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 10}, func(Progress) {
					if first == nil {
						first = rows(t, url, "profile", "tier")
					}
				})
				if err != nil {
					t.Fatalf("Rebuild: %v", err)
				}
				if len(first) != keys || first[0] != "rebuilt" || first[keys-1] != "rebuilt" {
					t.Errorf("when the new rebuild started, table profile held tiers %v, want the interrupted rebuild's (all \"rebuilt\")", first)
				}
				tier = "NULL" // rebuilt again from the records
			}
			if !sinkRunning {
				r2 = e.start(live, url)
			}
			before := r2.s.Stats().Records
			w.put(cust(1, "v2", nil))
			r2.waitRecords(t, before+1)
			var want []string
			for k := 1; k <= keys; k++ {
				v := "v1"
				if k == 1 {
					v = "v2"
				}
				tk := tier
				if k == 1 {
					tk = "NULL" // written by the sink after the swap
				}
				want = append(want, fmt.Sprintf("%d|%s|%s", k, v, tk))
			}
			wantRows(t, url, "profile", profileCols, want...)
			if got := r2.s.Stats().Records - before; got != 1 {
				t.Errorf("the sink applied %d records after the swap, want 1 (the rebuild's positions, nothing twice)", got)
			}
			for _, gone := range []string{shadow.Table, live.Table + "__old"} {
				var n int
				if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", gone).Scan(&n); err != nil || n != 0 {
					t.Errorf("table %s: %d left (%v), want it gone", gone, n, err)
				}
			}
			after, pending, err := st.loadOffsetsPending(t.Context(), live.Name)
			if err != nil || pending {
				t.Fatalf("offsets after the swap: pending %v, %v", pending, err)
			}
			if got := after[tp{"customers", 0}].next; got != 2*keys+1 {
				t.Errorf("stored offset of partition 0: got %d, want %d", got, 2*keys+1)
			}
			if err := r2.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// fastMetadata makes a consumer see a partition added to a topic within
// a second (kgo's default metadata refresh is every 5 minutes).
var fastMetadata = []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond), kgo.MetadataMaxAge(500 * time.Millisecond)}

// addPartition adds a fourth partition to topic w and writes the records
// of keys to it, with a client of its own (the env's producer would not
// know the partition yet).
func addPartition(t *testing.T, e *env, w *topicW, keys ...int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).CreatePartitions(ctx, 1, w.name)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("add a partition to %s: %v", w.name, err)
	}
	for _, k := range keys {
		key, value := cust(k, "new", nil)
		r := &kgo.Record{Topic: w.name, Partition: 3, Key: frame(t, w.keyID, w.key, key), Value: frame(t, w.valueID, w.value, value)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce to %s partition 3: %v", w.name, err)
		}
	}
}

// startWith is env.start with extra Kafka options.
func (e *env) startWith(model ReadModel, storeURL string, opts ...kgo.Opt) *running {
	e.t.Helper()
	s, err := New(Config{Model: model, StoreURL: storeURL, Kafka: append([]kgo.Opt{kgo.SeedBrokers(e.brokers...)}, opts...), Registry: e.reg, MaxBatch: 500})
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
			runErr = <-done
		})
		return runErr
	}
	e.t.Cleanup(func() { _ = stop() })
	return &running{s: s, stop: stop, done: done}
}

// TestRebuildPartitionAdded: a partition added to a source topic while a
// rebuild runs is read from its start, and the rebuild finishes, whether
// a running sink has already taken the partition in (its stored offsets
// then name a partition the rebuild had not listed) or no sink runs (the
// swapped-in table must hold the new partition's records all the same).
func TestRebuildPartitionAdded(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		for _, mode := range []string{"no sink", "sink running"} {
			t.Run(sk.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				store := sk.fresh(t)
				e := newEnv(t)
				w := e.topic("customers", customersKey, customersValue)
				const keys = 100
				for k := int64(1); k <= keys; k++ {
					w.put(cust(k, "v0", nil))
				}
				m := customerModel("profile")
				var r *running
				if mode == "sink running" {
					r = e.startWith(m, store, fastMetadata...)
					r.waitRecords(t, keys)
				}
				var want []string
				for k := 1; k <= keys; k++ {
					want = append(want, fmt.Sprintf("%d|v0|NULL", k))
				}
				newKeys := []int64{1001, 1002, 1003}
				for _, k := range newKeys {
					want = append(want, fmt.Sprintf("%d|new|NULL", k))
				}
				ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
				defer cancel()
				added := false
				err := Rebuild(ctx, Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 10}, func(Progress) {
					if added {
						return
					}
					added = true
					addPartition(t, e, w, newKeys...)
					if r != nil {
						// The sink takes the partition in before the rebuild
						// would swap.
						r.waitRecords(t, keys+int64(len(newKeys)))
					}
				})
				if err != nil {
					t.Fatalf("Rebuild: %v", err)
				}
				if !added {
					t.Fatal("the rebuild reported no progress")
				}
				// No sink writes meanwhile in "no sink": the table is the
				// rebuild's alone.
				wantRows(t, store, "profile", profileCols, want...)
				if r != nil {
					// The sink goes on from the swapped-in positions.
					before := r.s.Stats().Records
					addMore := func() {
						key, value := cust(1004, "later", nil)
						cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
						if err != nil {
							t.Fatal(err)
						}
						defer cl.Close()
						if err := cl.ProduceSync(ctx, &kgo.Record{Topic: w.name, Partition: 3, Key: frame(t, w.keyID, w.key, key), Value: frame(t, w.valueID, w.value, value)}).FirstErr(); err != nil {
							t.Fatal(err)
						}
					}
					addMore()
					r.waitRecords(t, before+1)
					wantRows(t, store, "profile", profileCols, append(want, "1004|later|NULL")...)
					if err := r.stop(); err != nil {
						t.Fatalf("the running sink: %v", err)
					}
				}
			})
		}
	}
}

// TestSinkPartitionAdded: a running sink takes in a partition added to a
// source topic and applies it from offset zero, not from its end: in a
// compacted entity topic the early records are state.
func TestSinkPartitionAdded(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "v0", nil))
	r := e.startWith(customerModel("profile"), store, fastMetadata...)
	r.waitRecords(t, 1)
	addPartition(t, e, w, 2, 3, 4)
	r.waitRecords(t, 4)
	wantRows(t, store, "profile", profileCols, "1|v0|NULL", "2|new|NULL", "3|new|NULL", "4|new|NULL")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRebuildSourceRemoved: a rebuild of a read model one of whose sources
// was removed from the config finishes, though the live read model's
// stored offsets still name that source's topic (nothing catches up to
// them; the swap drops them with the old table).
func TestRebuildSourceRemoved(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		lw := e.topic("loyalty", loyaltyKey, loyaltyValue)
		for k := int64(1); k <= 20; k++ {
			w.put(cust(k, "v0", nil))
			lw.put(acct(k, k, k))
		}
		r := e.start(profileModel(), store)
		r.waitRecords(t, 40)
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		m := customerModel("profile") // loyalty is no longer a source
		if err := Rebuild(ctx, Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}, nil); err != nil {
			t.Fatalf("Rebuild: %v", err)
		}
		var want []string
		for k := 1; k <= 20; k++ {
			want = append(want, fmt.Sprintf("%d|v0|NULL", k))
		}
		wantRows(t, store, "profile", profileCols, want...)
	})
}

// TestRebuildDecodesAhead: a rebuild of many small batches (each polled
// and decoded while the one before is written) holding updates, deletes
// and poison records applies every batch once, in order: the rows are the
// topic's latest state and each poison record is dead-lettered once.
func TestRebuildDecodesAhead(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t)} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			poisons := 0
			want := map[int64]string{}
			for i := int64(0); i < 300; i++ {
				k := i%40 + 1
				switch {
				case i%23 == 5:
					w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": k}), Value: []byte("not avro")})
					poisons++
				case i%17 == 3:
					w.del(map[string]any{"id": k})
					delete(want, k)
				default:
					name := fmt.Sprintf("v%d", i)
					w.put(cust(k, name, nil))
					want[k] = name
				}
			}
			m := customerModel("profile")
			m.OnError, m.DeadLetterTopic = DeadLetter, "profile.dlq"
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			if err := Rebuild(ctx, Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 7}, nil); err != nil {
				t.Fatalf("Rebuild: %v", err)
			}
			var rowsWant []string
			for k, name := range want {
				rowsWant = append(rowsWant, fmt.Sprintf("%d|%s|NULL", k, name))
			}
			sort.Strings(rowsWant)
			wantRows(t, store, "profile", profileCols, rowsWant...)
			dlq := readTopic(t, e, "profile.dlq")
			if len(dlq) != poisons {
				t.Fatalf("dead-letter records: got %d, want %d", len(dlq), poisons)
			}
		})
	}
}

// A rebuild runs at its GC target (rebuild_gc_percent) and restores the
// process's when it ends. Not parallel: the GC target is the process's.
func TestRebuildGCPercent(t *testing.T) {
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	for k := int64(1); k <= 30; k++ {
		w.put(cust(k, "v0", nil))
	}
	before := gcPercent(t)
	var during []uint64
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	cfg := Config{Model: customerModel("profile"), StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 10, RebuildGCPercent: 345}
	if err := Rebuild(ctx, cfg, func(Progress) { during = append(during, gcPercent(t)) }); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	if len(during) == 0 || slices.ContainsFunc(during, func(p uint64) bool { return p != 345 }) {
		t.Errorf("GC target during the rebuild: got %v, want 345 at every batch", during)
	}
	if after := gcPercent(t); after != before {
		t.Errorf("GC target after the rebuild: got %d, want %d restored", after, before)
	}
}

// gcPercent is the process's GC target.
func gcPercent(t *testing.T) uint64 {
	t.Helper()
	sample := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime metric %s is not available", sample[0].Name)
	}
	return sample[0].Value.Uint64()
}

// hangingRegistry is a registry whose SchemaByID of one id answers only
// when its context ends, or after hang (a registry down, its client
// waiting out its timeout).
type hangingRegistry struct {
	schemaRegistry
	id   int
	hang time.Duration
}

func (r hangingRegistry) SchemaByID(ctx context.Context, id int) (sr.Schema, error) {
	if id != r.id {
		return r.schemaRegistry.SchemaByID(ctx, id)
	}
	select {
	case <-ctx.Done():
		return sr.Schema{}, ctx.Err()
	case <-time.After(r.hang):
		return sr.Schema{}, errors.New("the registry did not answer")
	}
}

// TestRebuildErrorExitDoesNotWaitForDecodeAhead: a rebuild stopped by an
// error (a poison record under on_error: stop) returns at once, although
// the batch decoded ahead meanwhile waits on a registry that does not
// answer: that decode is cancelled, not waited out.
func TestRebuildErrorExitDoesNotWaitForDecodeAhead(t *testing.T) {
	t.Parallel()
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	old := w.valueID
	// The first batch (MaxBatch 1): a poison record; the next, decoded
	// ahead, written with a schema that is not the latest, which the
	// rebuild fetches from the registry by id.
	w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(1)}), Value: []byte("not avro")})
	w.put(cust(2, "two", nil))
	w.evolve(`{"type":"record","name":"customers","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null},{"name":"note","type":["null","string"],"default":null}]}`)
	const hang = 30 * time.Second
	reg := hangingRegistry{schemaRegistry: e.reg, id: old, hang: hang}
	ctx, cancel := context.WithTimeout(t.Context(), 2*hang)
	defer cancel()
	start := time.Now()
	err := Rebuild(ctx, Config{Model: customerModel("profile"), StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: reg, MaxBatch: 1}, nil)
	took := time.Since(start)
	if err == nil {
		t.Fatal("Rebuild: got nil, want the poison record's error")
	}
	if took >= hang/2 {
		t.Errorf("Rebuild returned after %v (%v), want well before the registry's %v", took, err, hang)
	}
}

// TestRebuildRefusedWhileAnotherRuns: a second rebuild of a read model
// started while one runs fails at once, naming the read model and saying
// another rebuild is running, and leaves the first one's shadow table
// alone: the first completes with every row. Once it has ended, a rebuild
// may run again (the lock went with it).
func TestRebuildRefusedWhileAnotherRuns(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		const keys = 60
		var want []string
		for k := int64(1); k <= keys; k++ {
			w.put(cust(k, "v0", nil))
			want = append(want, fmt.Sprintf("%d|v0|NULL", k))
		}
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		cfg := Config{Model: customerModel("profile"), StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 10}
		// The second rebuild starts from the first one's progress
		// report: the first is then between two batches, its shadow
		// table half built.
		var second error
		var secondTook time.Duration
		tried := false
		err := Rebuild(ctx, cfg, func(p Progress) {
			if tried || p.Swapped {
				return
			}
			tried = true
			began := time.Now()
			second = Rebuild(ctx, cfg, nil)
			secondTook = time.Since(began)
		})
		if err != nil {
			t.Fatalf("the first rebuild: %v", err)
		}
		if !tried {
			t.Fatal("the first rebuild reported no progress before its swap: the second was never started")
		}
		if second == nil || !strings.Contains(second.Error(), "read model profile") || !strings.Contains(second.Error(), "another rebuild of it is running") {
			t.Errorf("the second rebuild: got %v, want an error naming read model profile and saying another rebuild is running", second)
		}
		if secondTook > 10*time.Second {
			t.Errorf("the second rebuild was refused after %v, want at once", secondTook)
		}
		wantRows(t, store, "profile", profileCols, want...)
		if err := Rebuild(ctx, cfg, nil); err != nil {
			t.Errorf("a rebuild after the first ended: %v", err)
		}
		wantRows(t, store, "profile", profileCols, want...)
	})
}

// TestRebuildProgressFromLogStart: on a topic whose partition no longer
// starts at offset 0 (records deleted, as retention leaves it; compaction
// moves the log start too), the progress total counts from the log start,
// not from 0, so the reports reach it; the last report, after the swap,
// says swapped, with done equal to total.
func TestRebuildProgressFromLogStart(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	const keys, deleted = 40, 15
	var want []string
	for k := int64(1); k <= keys; k++ {
		w.put(cust(k, "v0", nil)) // partition 0: offset k-1
		if k > deleted {
			want = append(want, fmt.Sprintf("%d|v0|NULL", k))
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var before kadm.Offsets
	before.Add(kadm.Offset{Topic: "customers", Partition: 0, At: deleted})
	res, err := kadm.NewClient(e.cl).DeleteRecords(ctx, before)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("delete the first %d records of customers/0: %v", deleted, err)
	}
	var got []Progress
	err = Rebuild(ctx, Config{Model: customerModel("profile"), StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 10}, func(p Progress) { got = append(got, p) })
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	wantRows(t, store, "profile", profileCols, want...)
	const total = keys - deleted
	if len(got) < 2 {
		t.Fatalf("progress reports %+v: want at least one batch's and the final one", got)
	}
	for i, p := range got[:len(got)-1] {
		if p.Total != total || p.Swapped || p.Done > p.Total {
			t.Errorf("progress report %d: got %+v, want total %d, done at most that, not swapped", i, p, total)
		}
	}
	if last := got[len(got)-1]; !last.Swapped || last.Done != total || last.Total != total {
		t.Errorf("last progress report: got %+v, want swapped with done and total %d", last, total)
	}
}

// TestRebuildLockLost: the rebuild lock is a server session's, idle while
// the rebuild runs; a session ended meanwhile (here killed, as a dropped
// connection or MySQL's wait_timeout would end it) has taken the lock
// with it, and another rebuild could have started. The rebuild fails
// saying so, the live table and its stored offsets unchanged, whether the
// session ends between two batches or in the swap itself, after the lock
// was checked and before the swap commits (then another rebuild takes the
// lock before that commit): the check and the swap are one. A rebuild
// after it runs through.
func TestRebuildLockLost(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{postgresStore(t), mysqlStore()} {
		for _, when := range []string{"between batches", "at the swap"} {
			t.Run(sk.name+"/"+when, func(t *testing.T) {
				t.Parallel()
				url := sk.fresh(t)
				e := newEnv(t)
				w := e.topic("customers", customersKey, customersValue)
				const keys = 60
				var want []string
				for k := int64(1); k <= keys; k++ {
					w.put(cust(k, "v0", nil))
					want = append(want, fmt.Sprintf("%d|v0|NULL", k))
				}
				r := e.start(customerModel("profile"), url)
				r.waitRecords(t, keys)
				if err := r.stop(); err != nil {
					t.Fatal(err)
				}
				db, d, err := openStore(url)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				st := &store{db: db, d: d}
				ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
				defer cancel()
				// A row no record has: gone if the rebuilt table is swapped in.
				if _, err := db.ExecContext(ctx, "INSERT INTO profile (customer_id, display_name) VALUES (999, 'mine')"); err != nil {
					t.Fatal(err)
				}
				offsetsBefore, err := st.loadOffsets(ctx, "profile")
				if err != nil {
					t.Fatal(err)
				}
				cfg := Config{Model: customerModel("profile"), StoreURL: url, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg, MaxBatch: 10}
				killed := false
				var killErr error
				var other *rebuildLock
				defer func() {
					if other != nil {
						other.release()
					}
				}()
				progress := func(Progress) {}
				batchesAfter := 0 // batches applied after the kill
				switch when {
				case "between batches":
					// From the first progress report: the rebuild is then
					// between two batches, well before its swap. It checks
					// its lock before each batch here (every 10 s by
					// default), so it stops at the next one instead of
					// loading the rest for a swap it cannot make.
					cfg.rebuildLockCheckEvery = time.Nanosecond
					progress = func(p Progress) {
						if p.Swapped {
							return
						}
						if killed {
							batchesAfter++
							return
						}
						killed = true
						killErr = killRebuildLockSession(ctx, sk.name, db)
					}
				case "at the swap":
					cfg.beforeSwapCommit = func(context.Context) {
						if killed {
							return
						}
						killed = true
						if killErr = killRebuildLockSession(ctx, sk.name, db); killErr == nil {
							// Another rebuild takes the lock before the swap
							// commits: it could now drop and begin again the
							// shadow table the swap is about to put in place.
							killErr = whenLockFree(func() (err error) {
								other, err = lockRebuild(ctx, url, "profile")
								return err
							})
						}
					}
				}
				err = Rebuild(ctx, cfg, progress)
				if !killed || killErr != nil {
					t.Fatalf("kill the rebuild lock's session: done %v, %v", killed, killErr)
				}
				if err == nil || !strings.Contains(err.Error(), "read model profile: the rebuild lost its lock before its swap committed") || !strings.Contains(err.Error(), "rebuild again") {
					t.Fatalf("the rebuild whose lock was lost: got %v, want an error naming read model profile, saying it lost its lock before its swap committed", err)
				}
				if batchesAfter > 1 { // the batch decoded ahead may be applied before the check
					t.Errorf("the rebuild applied %d batches after its lock was lost, want it to stop at the next check", batchesAfter)
				}
				wantRows(t, url, "profile", profileCols, append(slices.Clone(want), "999|mine|NULL")...)
				offsetsAfter, err := st.loadOffsets(ctx, "profile")
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(offsetsAfter) != fmt.Sprint(offsetsBefore) {
					t.Errorf("stored offsets of read model profile after the failed rebuild: got %v, want them unchanged, %v", offsetsAfter, offsetsBefore)
				}
				if other != nil {
					other.release()
					other = nil
				}
				if err := whenLockFree(func() error { return Rebuild(ctx, cfg, nil) }); err != nil {
					t.Fatalf("a rebuild after it: %v", err)
				}
				wantRows(t, url, "profile", profileCols, want...)
			})
		}
	}
}

// killRebuildLockSession ends the session holding the rebuild lock of
// read model profile in the store db is on (of kind postgres or mysql),
// as a DBA's kill would.
func killRebuildLockSession(ctx context.Context, kind string, db *sql.DB) error {
	var n int
	switch kind {
	case "postgres":
		// The database is the test's own: its one advisory lock is the
		// rebuild's. The timeout waits for the session's end.
		if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM (SELECT pid FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) OFFSET 0) l`).Scan(&n); err != nil {
			return err
		}
	case "mysql":
		var id int64
		if err := db.QueryRowContext(ctx, "SELECT IS_USED_LOCK("+rebuildLockName+")", "profile").Scan(&id); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", id)); err != nil {
			return err
		}
		n = 1
	}
	if n != 1 {
		return fmt.Errorf("%d sessions holding the rebuild lock killed, want 1", n)
	}
	return nil
}

// whenLockFree runs f, which takes a rebuild lock, again while it fails
// because the lock is held, for up to 10 s: the server frees the lock of
// a session that was just killed or closed (MySQL after KILL returns,
// either after the client's close) once it has ended that session.
func whenLockFree(f func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil || !strings.Contains(err.Error(), "another rebuild of it is running") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRebuildLockReleasedAtOnce: a rebuild frees its lock before it
// closes the lock's session, so that a rebuild started right after it
// returns (a script rebuilding in turn, a retry) finds it free, not held
// until the server has noticed the session gone.
func TestRebuildLockReleasedAtOnce(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			for i := range 20 {
				first, err := lockRebuild(t.Context(), store, "profile")
				if err != nil {
					t.Fatalf("lock %d of 20, at once after the release of the one before: %v", i+1, err)
				}
				first.release()
			}
			// What makes the above deterministic: the lock is free once
			// unlocked, the session still open.
			first, err := lockRebuild(t.Context(), store, "profile")
			if err != nil {
				t.Fatal(err)
			}
			defer first.release()
			if err := first.unlock(t.Context()); err != nil {
				t.Fatalf("unlock: %v", err)
			}
			second, err := lockRebuild(t.Context(), store, "profile")
			if err != nil {
				t.Fatalf("lock after the first was unlocked, its session open: %v", err)
			}
			second.release()
		})
	}
}
