package sink

import (
	"context"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDecodeAheadConvertsRows: in a read model of one source, a batch
// decoded ahead carries each record's row as the driver values write
// would convert from the decoded record (key columns included), so that
// write has nothing left to convert; a tombstone and a poison record carry
// none. With a second source nothing is converted ahead: an owner's row
// is filled from the side table as the batch stands when it is written.
func TestDecodeAheadConvertsRows(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t)} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			w := e.topic("customers", customersKey, customersValue)
			recs := []*kgo.Record{
				w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(1)}), Value: frame(t, w.valueID, w.value, map[string]any{"id": int64(1), "name": "ann\tthe\\first", "tier": "gold"})}),
				w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(2)}), Value: frame(t, w.valueID, w.value, map[string]any{"id": int64(2), "name": "bob", "tier": nil})}),
				w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(3)})}),                            // a tombstone
				w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(4)}), Value: []byte("not avro")}), // poison
				w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(300)}), Value: frame(t, w.valueID, w.value, map[string]any{"id": int64(300), "name": "", "tier": "silver"})}),
			}
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()

			one := preparedSink(ctx, t, e, customerModel("profile"), sk.fresh(t))
			b := one.decodeAhead(ctx, recs)
			if b.n != len(recs) {
				t.Fatalf("decoded %d records ahead, want %d", b.n, len(recs))
			}
			a := one.a
			for i, ent := range b.ents {
				if b.errs[i] != nil || ent.value.none() {
					if ent.row != nil {
						t.Errorf("record %d (error %v, tombstone %v): a row converted ahead: %v", i, b.errs[i], ent.value.none(), ent.row)
					}
					continue
				}
				// The reference: write's own conversion of the decoded record.
				want := make([]any, len(a.p.columns))
				rk, err := a.rowKey(a.p.owner, ent.key, ent.key)
				if err != nil {
					t.Fatal(err)
				}
				if err := a.storeKeyInto(want, rk); err != nil {
					t.Fatal(err)
				}
				if err := a.sourceValuesInto(want, a.p.owner, ent.key, ent.value); err != nil {
					t.Fatal(err)
				}
				if ent.row == nil {
					t.Errorf("record %d: not converted ahead", i)
				} else if !reflect.DeepEqual(ent.row, want) {
					t.Errorf("record %d: converted ahead %#v, write converts %#v", i, ent.row, want)
				}
			}

			lw := e.topic("loyalty", loyaltyKey, loyaltyValue)
			k, v := acct(1, 1, int64(5))
			more := append(recs[:2:2], lw.produce(&kgo.Record{Topic: "loyalty", Key: frame(t, lw.keyID, lw.key, k), Value: frame(t, lw.valueID, lw.value, v)}))
			two := preparedSink(ctx, t, e, profileModel(), sk.fresh(t))
			for i, ent := range two.decodeAhead(ctx, more).ents {
				if ent.row != nil {
					t.Errorf("two sources, record %d: a row converted ahead: %v", i, ent.row)
				}
			}
		})
	}
}

// preparedSink is a sink of model into store with its plan compiled and
// its table created, as a rebuild has it before its first batch.
func preparedSink(ctx context.Context, t *testing.T, e *env, model ReadModel, store string) *Sink {
	t.Helper()
	s, err := New(Config{Model: model, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.prepare(ctx); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	t.Cleanup(func() { s.st.db.Close() })
	return s
}
