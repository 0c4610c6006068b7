package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// recordingReader is a walHandler that writes one line per callback and
// confirms nothing.
type recordingReader struct {
	r      *walReader
	mu     sync.Mutex // guards events
	events []string
}

func (h *recordingReader) add(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, fmt.Sprintf(format, args...))
}

func (h *recordingReader) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

func (h *recordingReader) begin() error { h.add("begin"); return nil }
func (h *recordingReader) commit(context.Context, pglogrepl.LSN, pglogrepl.LSN) error {
	h.add("commit")
	return nil
}
func (h *recordingReader) relation(_ context.Context, m *pglogrepl.RelationMessage) (*walRel, error) {
	return &walRel{idx: 0, table: nil}, nil
}
func (h *recordingReader) row(_ context.Context, op Op, _ *walRel, _, newTuple *pglogrepl.TupleData) error {
	h.add("%s %s", opName(op), newTuple.Columns[0].Data)
	return nil
}
func (h *recordingReader) truncate(context.Context, *walRel) error { h.add("truncate"); return nil }
func (h *recordingReader) message(_ context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	h.add("message %s %q transactional=%t in_txn=%t", m.Prefix, m.Content, m.Transactional, h.r.txn.open)
	return nil
}
func (h *recordingReader) keepalive(pglogrepl.LSN) error { return nil }
func (h *recordingReader) status() pglogrepl.StandbyStatusUpdate {
	return pglogrepl.StandbyStatusUpdate{}
}
func (h *recordingReader) statusSent(pglogrepl.StandbyStatusUpdate) {}

// TestWALReaderSurfacesMessages: the reader hands logical decoding
// messages (pg_logical_emit_message, asked for on PostgreSQL 14+) to its
// handler, transactional ones inside their transaction, in WAL order with
// the row changes around them.
func TestWALReaderSurfacesMessages(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	db := newDB(t, pg, "walreader", `CREATE TABLE items (id int PRIMARY KEY);
		CREATE PUBLICATION walreader FOR TABLE items`)
	db.exec(`SELECT pg_create_logical_replication_slot('walreader', 'pgoutput')`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	repl, err := connectReplication(ctx, db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repl.Close(context.Background()) })
	if v := serverMajor(repl); v < 14 {
		t.Fatalf("server_version %q: PostgreSQL 14 or later is needed for logical decoding messages; install it and put its bin directory first in PATH", repl.ParameterStatus("server_version"))
	}
	h := &recordingReader{}
	r := newWALReader(repl, "walreader", h, 50*time.Millisecond, nil)
	h.r = &r
	if err := r.start(ctx, "walreader", 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()

	db.exec(`BEGIN; INSERT INTO items VALUES (1);
		SELECT pg_logical_emit_message(true, 'replicator.watermark', 'low');
		INSERT INTO items VALUES (2); COMMIT`)
	db.exec(`SELECT pg_logical_emit_message(false, 'replicator.signal', 'now')`)
	db.exec(`TRUNCATE items`)
	want := []string{
		"begin", "INSERT 1", `message replicator.watermark "low" transactional=true in_txn=true`, "INSERT 2", "commit",
		`message replicator.signal "now" transactional=false in_txn=false`,
		"begin", "truncate", "commit",
	}
	deadline := time.Now().Add(waitTimeout)
	for len(h.got()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling toward the deadline
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("run after cancel: got %v, want context.Canceled", err)
	}
	if got := h.got(); !slices.Equal(got, want) {
		t.Errorf("callbacks:\n got %s\nwant %s", strings.Join(got, " | "), strings.Join(want, " | "))
	}
}
