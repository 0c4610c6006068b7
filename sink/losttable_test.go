package sink

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDroppedTableWithStoredOffsetsStops: a read-model table dropped while
// its offsets stay stored is not created again empty, to go on from those
// offsets without the rows before them (status would show it caught up):
// the read model stops naming `replicator rebuild`, and check and status
// report it.
func TestDroppedTableWithStoredOffsetsStops(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		w.put(cust(1, "ann", "gold"))
		w.put(cust(2, "bob", nil))
		r := e.start(customerModel("profile"), store)
		r.waitRecords(t, 2)
		if err := r.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		db, d, err := openStore(store)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(t.Context(), "DROP TABLE "+d.quote("profile")); err != nil {
			t.Fatal(err)
		}

		_, problems := Check(t.Context(), Config{Model: customerModel("profile"), StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg})
		if got := fmt.Sprint(problems); !strings.Contains(got, "replicator rebuild --config <file> --read-model profile") {
			t.Errorf("check: got problems %v, want the dropped table reported with the rebuild that restores it", problems)
		}
		if _, err := ReadStatus(t.Context(), customerModel("profile"), store, kadm.NewClient(e.cl), time.Now()); err == nil || !strings.Contains(err.Error(), "replicator rebuild --config <file> --read-model profile") {
			t.Errorf("status: got %v, want the dropped table reported with the rebuild that restores it", err)
		}
		err = waitStopped(t, e.start(customerModel("profile"), store))
		if err == nil || !strings.Contains(err.Error(), `does not exist, but replicator_sink_offsets holds offsets of read model profile`) || !strings.Contains(err.Error(), "replicator rebuild --config <file> --read-model profile") {
			t.Fatalf("Run: got %v, want the read model stopped, naming the stored offsets and the rebuild", err)
		}
		if have, err := d.columns(t.Context(), db, "profile"); err != nil || have != nil {
			t.Errorf("table profile after the stop: got columns %v (%v), want it not created", have, err)
		}
	})
}
