package broker

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// lockedBuffer is written by the client's goroutines and read by the test.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestClientLoggerNamesUnreachableBroker: while the producer retries
// against a broker that is down, the log says so, naming the address.
func TestClientLoggerNamesUnreachableBroker(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused

	var buf lockedBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cl := newClient(t, addr, &ProducerConfig{}, ClientLogger(log))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl.Produce(ctx, &kgo.Record{Topic: "t", Value: []byte("v")}, func(*kgo.Record, error) {})

	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(buf.String(), "unable to open connection to broker") {
		if time.Now().After(deadline) {
			t.Fatalf("no connection failure logged within %v; log:\n%s", testTimeout, buf.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval toward the deadline
	}
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, addr) || !strings.Contains(out, "component=kafka-client") {
		t.Errorf("log line: got %q, want a WARN naming %s and component=kafka-client", out, addr)
	}
	if strings.Contains(out, "level=DEBUG") || strings.Contains(out, "level=INFO") {
		t.Errorf("log: got kgo info/debug lines, want warnings and errors only:\n%s", out)
	}
}
