package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produceKeyed produces n records key-i=value-i and returns once all are
// acknowledged.
func produceKeyed(t *testing.T, cl *kgo.Client, topic string, n int) {
	t.Helper()
	kvs := make([][2]string, n)
	for i := range kvs {
		kvs[i] = [2]string{fmt.Sprintf("key-%03d", i), fmt.Sprintf("value-%03d", i)}
	}
	ctx := t.Context()
	recs := make([]*kgo.Record, n)
	for i, kv := range kvs {
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(kv[0]), Value: []byte(kv[1])}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// checkKeyed asserts recs are exactly key-i=value-i for i < n, once each.
func checkKeyed(t *testing.T, recs []*kgo.Record, n int) {
	t.Helper()
	seen := make(map[string]string, len(recs))
	for _, r := range recs {
		if prev, dup := seen[string(r.Key)]; dup {
			t.Fatalf("key %s read twice (%s, then %s)", r.Key, prev, r.Value)
		}
		seen[string(r.Key)] = string(r.Value)
	}
	for i := range n {
		k, want := fmt.Sprintf("key-%03d", i), fmt.Sprintf("value-%03d", i)
		if got := seen[k]; got != want {
			t.Fatalf("key %s: got value %q, want %q", k, got, want)
		}
	}
}

func TestEmbeddedPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const topic, n = "persist", 100

	first, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(first.Close) // no-op after the explicit Close below
	ensure(t, newAdmin(t, first.Addr()), TopicSpec{Name: topic, Partitions: 3})
	produceKeyed(t, newClient(t, first.Addr(), &ProducerConfig{}), topic, n)
	first.Close()

	second := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	res := ensure(t, newAdmin(t, second.Addr()), TopicSpec{Name: topic, Partitions: 3})
	if len(res.Existing) != 1 || len(res.Created) != 0 {
		t.Fatalf("after restart: got created %v existing %v, want the topic to exist", res.Created, res.Existing)
	}
	checkKeyed(t, consumeN(t, second.Addr(), topic, n), n)
}

// TestEmbeddedReloadAfterKill runs a broker in a child process that is
// SIGKILLed right after its produce is acknowledged (no Close, no final
// save), then reloads the directory here: every acknowledged record must be
// there.
func TestEmbeddedReloadAfterKill(t *testing.T) {
	const topic, n = "killed", 100
	if dir := os.Getenv("BROKER_TEST_KILL_DIR"); dir != "" {
		e, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
		if err != nil {
			t.Fatalf("StartEmbedded: %v", err)
		}
		ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 3})
		produceKeyed(t, newClient(t, e.Addr(), &ProducerConfig{}), topic, n)
		p, _ := os.FindProcess(os.Getpid())
		_ = p.Kill()
		select {} // the kill is asynchronous; never return normally
	}
	t.Parallel()

	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestEmbeddedReloadAfterKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BROKER_TEST_KILL_DIR="+dir)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != -1 {
		t.Fatalf("child: got %v, want it killed by a signal; output:\n%s", err, out)
	}

	e := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	checkKeyed(t, consumeN(t, e.Addr(), topic, n), n)
}

func TestEmbeddedListen(t *testing.T) {
	t.Parallel()

	t.Run("port in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addr := ln.Addr().String()
		_, err = StartEmbedded(t.Context(), EmbeddedConfig{Listen: addr})
		if err == nil || !strings.Contains(err.Error(), "kafka.listen") || !strings.Contains(err.Error(), addr) {
			t.Fatalf("got error %v, want one naming kafka.listen and %s", err, addr)
		}
	})

	t.Run("bad address", func(t *testing.T) {
		t.Parallel()
		_, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "no-port"})
		if err == nil || !strings.Contains(err.Error(), "kafka.listen") {
			t.Fatalf("got error %v, want one naming kafka.listen", err)
		}
	})

	t.Run("host other than 127.0.0.1", func(t *testing.T) {
		t.Parallel()
		// All of 127.0.0.0/8 is loopback on Linux; kfake alone would
		// bind 127.0.0.1 whatever we asked for.
		e := startEmbedded(t, EmbeddedConfig{Listen: "127.0.0.2:0"})
		host, _, _ := net.SplitHostPort(e.Addr())
		if host != "127.0.0.2" {
			t.Fatalf("Addr: got %s, want host 127.0.0.2", e.Addr())
		}
		brokers, err := newAdmin(t, e.Addr()).ListBrokers(t.Context())
		if err != nil {
			t.Fatalf("ListBrokers: %v", err)
		}
		if len(brokers) != 1 || brokers[0].Host != "127.0.0.2" {
			t.Fatalf("metadata: got brokers %+v, want one advertised on 127.0.0.2", brokers)
		}
	})

	t.Run("wildcard host dials loopback", func(t *testing.T) {
		t.Parallel()
		// A wildcard listens on the network: credentials are required.
		creds := SASLConfig{Mechanism: MechanismScramSHA256, Username: "u", Password: "p"}
		e := startEmbedded(t, EmbeddedConfig{Listen: "0.0.0.0:0", SASL: creds})
		if !strings.HasPrefix(e.Addr(), "127.0.0.1:") {
			t.Fatalf("Addr: got %s, want 127.0.0.1:<port>", e.Addr())
		}
		opts, err := Config{Brokers: []string{e.Addr()}, SASL: creds}.ClientOptions()
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		ensure(t, kadm.NewClient(cl), TopicSpec{Name: "w", Partitions: 1})
	})
}

func TestEmbeddedDataDirLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	startEmbedded(t, EmbeddedConfig{DataDir: dir})
	_, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second broker on one data dir: got error %v, want 'in use'", err)
	}
}

// TestCompaction shows what kfake needs to compact: no segment roll or
// dirty ratio, but the newest batch of a partition is never cleaned, and
// only batches before it are indexed for "latest offset per key". So a
// value is superseded only by a later value that is not itself in the last
// batch; here a third record (another key) closes the window.
func TestCompaction(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	const topic = "compact-me"
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1})
	cl := newClient(t, e.Addr(), &ProducerConfig{})
	produceSync(t, cl, topic, [2]string{"k", "v1"}, [2]string{"k", "v2"}, [2]string{"other", "x"})

	e.Cluster().Compact()

	recs := consumeUntil(t, e.Addr(), topic, func(rs []*kgo.Record) bool {
		return len(rs) > 0 && string(rs[len(rs)-1].Key) == "other"
	})
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Key)+"="+string(r.Value))
	}
	if want := "k=v2 other=x"; strings.Join(got, " ") != want {
		t.Fatalf("after Compact: got %q, want %q", strings.Join(got, " "), want)
	}
	if start := e.Cluster().PartitionInfo(topic, 0).LogStartOffset; start != 1 {
		t.Fatalf("log start offset: got %d, want 1", start)
	}
}

// TestCompactionTicker checks that compaction runs on its own, on a fresh
// broker and on one reloaded from disk (where kfake itself would not start
// its ticker), once the topics have grown by the configured amount.
func TestCompactionTicker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		restart bool
	}{
		{"fresh", false},
		{"reloaded", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const topic = "tick"
			cfg := EmbeddedConfig{DataDir: t.TempDir(), CompactionInterval: 20 * time.Millisecond, CompactionMinDirtyBytes: 1}
			e := startEmbedded(t, cfg)
			ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 1})
			if tc.restart {
				e.Close()
				e = startEmbedded(t, cfg)
			}
			cl := newClient(t, e.Addr(), &ProducerConfig{})
			produceSync(t, cl, topic, [2]string{"k", "v1"}, [2]string{"k", "v2"}, [2]string{"other", "x"})
			// A pass may run between two of those produces and leave more
			// than the growth since (the dirty-ratio rule then waits for
			// the log to double), so keep the topic growing until one runs
			// after k=v2: another record of "other" per poll, bounded by
			// pollUntil's deadline.
			pollUntil(t, "compaction removed k=v1", func() bool {
				if e.Cluster().PartitionInfo(topic, 0).LogStartOffset >= 1 {
					return true
				}
				produceSync(t, cl, topic, [2]string{"other", "x"})
				return false
			})
		})
	}
}

func TestSlogAdapter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler slog.Level
		level   kfake.LogLevel
		want    string // empty: filtered out
	}{
		{"error", slog.LevelInfo, kfake.LogLevelError, "level=ERROR msg=\"persist 7\" component=kfake"},
		{"warn", slog.LevelInfo, kfake.LogLevelWarn, "level=WARN msg=\"persist 7\" component=kfake"},
		{"info is debug", slog.LevelDebug, kfake.LogLevelInfo, "level=DEBUG msg=\"persist 7\" component=kfake"},
		{"info filtered", slog.LevelInfo, kfake.LogLevelInfo, ""},
		{"debug filtered", slog.LevelInfo, kfake.LogLevelDebug, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf syncBuffer
			h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
				Level: tc.handler,
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				},
			})
			slogAdapter{slog.New(h)}.Logf(tc.level, "persist %d", 7)
			if got := strings.TrimSpace(buf.String()); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the broker's goroutines.
type syncBuffer struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEmbeddedInProcessDial: a client in the broker's process, dialing with
// Embedded.DialContext, reaches it in memory (every connection it opens),
// a TCP client reads what it produced, and once the broker is closed an
// in-process dial fails instead of waiting.
func TestEmbeddedInProcessDial(t *testing.T) {
	t.Parallel()
	const topic, n = "in-process", 100
	e := startEmbedded(t, EmbeddedConfig{})
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: topic, Partitions: 3})

	var dials, inMemory atomic.Int32
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		c, err := e.DialContext(ctx, network, host)
		dials.Add(1)
		if err == nil && c.LocalAddr().Network() == "pipe" {
			inMemory.Add(1)
		}
		return c, err
	}
	opts, err := Config{Brokers: []string{e.Addr()}, Dial: dial}.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, ProducerOptions(ProducerConfig{})...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produceKeyed(t, cl, topic, n)
	if d, m := dials.Load(), inMemory.Load(); d == 0 || m != d {
		t.Errorf("in-process producer: %d dials, %d of them in memory; want all in memory", d, m)
	}
	checkKeyed(t, consumeN(t, e.Addr(), topic, n), n)

	e.Close()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if _, err := e.DialContext(ctx, "tcp", e.Addr()); !errors.Is(err, errListenerClosed) {
		t.Errorf("dial after Close: got %v, want %v", err, errListenerClosed)
	}
}
