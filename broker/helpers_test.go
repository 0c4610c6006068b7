package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testTimeout bounds every wait in these tests; the broker is in-process,
// so hitting it means something is stuck, not slow.
const testTimeout = 30 * time.Second

// startEmbedded starts an embedded broker closed at test cleanup.
func startEmbedded(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	e, err := StartEmbedded(t.Context(), cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// newClient returns a client of addr built from our own option functions,
// closed at test cleanup.
func newClient(t *testing.T, addr string, p *ProducerConfig, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts, err := Config{Brokers: []string{addr}, ClientID: "broker-test"}.ClientOptions()
	if err != nil {
		t.Fatalf("ClientOptions: %v", err)
	}
	if p != nil {
		opts = append(opts, ProducerOptions(*p)...)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newAdmin(t *testing.T, addr string) *kadm.Client {
	t.Helper()
	return kadm.NewClient(newClient(t, addr, nil))
}

func ensure(t *testing.T, adm *kadm.Client, specs ...TopicSpec) EnsureResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	res, err := EnsureTopics(ctx, adm, specs)
	if err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	return res
}

// produceSync produces records one request at a time (so each lands in its
// own batch) and fails the test on any error.
func produceSync(t *testing.T, cl *kgo.Client, topic string, kvs ...[2]string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var out []*kgo.Record
	for _, kv := range kvs {
		r := &kgo.Record{Topic: topic, Key: []byte(kv[0]), Value: []byte(kv[1])}
		if kv[1] == "" {
			r.Value = nil
		}
		res := cl.ProduceSync(ctx, r)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("produce %s=%s: %v", kv[0], kv[1], err)
		}
		out = append(out, res[0].Record)
	}
	return out
}

// consumeUntil reads topic from the start until done reports true for the
// records read so far, failing the test at the deadline.
func consumeUntil(t *testing.T, addr, topic string, done func([]*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	cl := newClient(t, addr, nil,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var recs []*kgo.Record
	for !done(recs) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consume %s: got %d records by the deadline and the condition still fails", topic, len(recs))
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consume %s[%d]: %v", topic, p, err)
		})
		recs = append(recs, fs.Records()...)
	}
	return recs
}

func consumeN(t *testing.T, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	recs := consumeUntil(t, addr, topic, func(r []*kgo.Record) bool { return len(r) >= n })
	if len(recs) != n {
		t.Fatalf("consume %s: got %d records, want %d", topic, len(recs), n)
	}
	return recs
}

// pollUntil calls cond every few milliseconds until it holds or the
// deadline passes.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after %v", what, testTimeout)
		}
		<-tick.C
	}
}
