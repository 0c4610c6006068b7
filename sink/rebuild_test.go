package sink

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRebuildWhileSinkRuns rebuilds a read model while its sink runs and a
// writer produces: a reader querying the table in a loop never sees fewer
// rows than before the rebuild (no empty or partial table), and the final
// table holds the latest record of every key (nothing consumed during the
// rebuild is lost).
func TestRebuildWhileSinkRuns(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t)} { // MySQL: refused, see TestRebuildRefusedOnMySQL
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			store := sk.fresh(t)
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			const keys = 300
			for k := int64(1); k <= keys; k++ {
				w.put(cust(k, "v0", nil))
			}
			m := customerModel("profile")
			r := e.start(m, store)
			r.waitRecords(t, keys)

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
				want = append(want, fmt.Sprintf("%d|%s", k, v))
			}
			deadline := time.Now().Add(testTimeout)
			for {
				got := rows(t, store, "profile", "customer_id", "display_name")
				if fmt.Sprint(got) == fmt.Sprint(sortedCopy(want)) {
					break
				}
				if time.Now().After(deadline) {
					wantRows(t, store, "profile", []string{"customer_id", "display_name"}, want...)
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
}

func sortedCopy(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

func TestRebuildRefusedOnMySQL(t *testing.T) {
	t.Parallel()
	err := Rebuild(t.Context(), Config{Model: customerModel("profile"), StoreURL: "mysql://root@127.0.0.1:3306/x", Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Registry: nil}, nil)
	if err == nil || !strings.Contains(err.Error(), "not supported on MySQL") {
		t.Errorf("got %v, want the refusal", err)
	}
}
