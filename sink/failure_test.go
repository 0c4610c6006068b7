package sink

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestStopIsRecorded: a read model whose sink stopped with an error (a
// poison record with on_error: stop) is reported by ReadStatus and Check
// with the error, though its lag is small; a start that prepares its
// store (the poison record dead-lettered now) clears it.
func TestStopIsRecorded(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		w.put(cust(1, "ann", nil))
		m := customerModel("profile")
		r := e.start(m, store)
		r.waitRecords(t, 1)
		w.produce(&kgo.Record{Topic: "customers", Key: frame(t, w.keyID, w.key, map[string]any{"id": int64(2)}), Value: []byte("not avro")})
		if err := waitStopped(t, r); err == nil {
			t.Fatal("Run: got nil, want the poison record's error")
		}
		st, err := ReadStatus(t.Context(), m, store, kadm.NewClient(e.cl), time.Now())
		if err != nil {
			t.Fatalf("ReadStatus: %v", err)
		}
		if st.Stopped == nil || !strings.Contains(st.Stopped.Error, "Confluent wire-format header") || strings.HasPrefix(st.Stopped.Error, "read model") ||
			time.Since(st.Stopped.At) > time.Minute || time.Since(st.Stopped.At) < 0 {
			t.Fatalf("ReadStatus: stopped %+v (lag %d), want the poison record's error, recorded just now", st.Stopped, st.Lag)
		}
		msg := st.Stopped.Message("profile")
		if !strings.HasPrefix(msg, "read model profile stopped at ") || !strings.HasSuffix(msg, "fix the cause and start `replicator sink` again") {
			t.Errorf("message %q", msg)
		}
		cfg := Config{Model: m, StoreURL: store, Kafka: []kgo.Opt{kgo.SeedBrokers(e.brokers...)}, Registry: e.reg}
		if _, problems := Check(t.Context(), cfg); !strings.Contains(fmt.Sprint(problems), "read model profile stopped at ") {
			t.Errorf("check: problems %v, want the stop", problems)
		}

		m.OnError, m.DeadLetterTopic = DeadLetter, "profile.dlq"
		r2 := e.start(m, store)
		r2.waitRecords(t, 1) // the poison record, dead-lettered
		if st, err = ReadStatus(t.Context(), m, store, kadm.NewClient(e.cl), time.Now()); err != nil || st.Stopped != nil {
			t.Errorf("ReadStatus after a restart: stopped %+v, error %v; want none", st.Stopped, err)
		}
		if _, problems := Check(t.Context(), cfg); strings.Contains(fmt.Sprint(problems), "stopped at") {
			t.Errorf("check after a restart: problems %v, want no stop", problems)
		}
		if err := r2.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
}

// TestStopRecordBounded: the recorded error is cut to maxStoppedError
// bytes, on a character boundary, and a second stop replaces the first.
func TestStopRecordBounded(t *testing.T) {
	t.Parallel()
	url := sqliteStore().fresh(t)
	db, d, err := openStore(url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &store{db: db, d: d}
	if err := st.ensureSinkTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := recordStop(t.Context(), url, "profile", time.Now(), "first"); err != nil {
		t.Fatal(err)
	}
	long := "read model profile: " + strings.Repeat("é", maxStoppedError)
	if err := recordStop(t.Context(), url, "profile", time.Now(), long); err != nil {
		t.Fatal(err)
	}
	got, err := st.loadStop(t.Context(), "profile")
	if err != nil || got == nil {
		t.Fatalf("loadStop: %+v, %v", got, err)
	}
	if len(got.Error) > maxStoppedError || len(got.Error) < maxStoppedError-1 || !strings.HasPrefix(got.Error, "éé") || strings.ContainsRune(got.Error, '\uFFFD') {
		t.Errorf("recorded %d bytes starting %q, want %d bytes of é", len(got.Error), got.Error[:min(10, len(got.Error))], maxStoppedError)
	}
}
