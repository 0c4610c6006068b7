//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/listenaddr/addrtest"
	"github.com/replicator/replicator/pgcluster"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// replicatorBinary builds cmd/replicator once per test process.
func replicatorBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "replicator-e2e-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "replicator")
		cmd := exec.Command("go", "build", "-o", binPath, "../../cmd/replicator")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeAddr returns a loopback address that nothing listens on, for a
// process the test starts to bind later (or to find refused): outside the
// kernel's ephemeral range (see addrtest.Free).
func freeAddr(t *testing.T) string {
	t.Helper()
	return addrtest.Free(t)
}

// process is one `replicator` child process.
type process struct {
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startKfake starts a one-broker kfake cluster in this process, on a
// free loopback port, closed when the test ends, and returns it and its
// address: for tests that control what the broker answers.
func startKfake(t *testing.T) (*kfake.Cluster, string) {
	t.Helper()
	addr := freeAddr(t)
	_, portText, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("port of %s: %v", addr, err)
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return kc, addr
}

func startReplicator(t *testing.T, args ...string) *process {
	t.Helper()
	return startReplicatorEnv(t, nil, args...)
}

// startReplicatorEnv is startReplicator with the given environment (nil:
// the test's own).
func startReplicatorEnv(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{output: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(replicatorBinary(t), args...)
	p.cmd.Env = env
	p.cmd.Stdout = p.output
	p.cmd.Stderr = p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start replicator: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("replicator output:\n%s", p.output.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal replicator: %v", err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("replicator exited with %v; output:\n%s", err, p.output.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("replicator did not stop within 60s; output:\n%s", p.output.String())
	}
}

// waitExit waits for the process to end by itself and returns its error.
func (p *process) waitExit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(within):
		t.Fatalf("replicator still running after %s; output:\n%s", within, p.output.String())
		return nil
	}
}

func connect(t *testing.T, pg *pgcluster.Cluster) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["TimeZone"] = "UTC"
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// waitCaughtUp polls until p streams and the slot has confirmed the
// current end of WAL, which means every change written so far is
// acknowledged by the broker.
//
// The slot alone does not say it: a slot just created has confirmed the
// end of WAL already (its consistent point), while p still reads the
// snapshot and has produced nothing; and a restarted p finds the slot
// where the last process left it. Only a p that streams has read what
// the slot holds.
func waitCaughtUp(t *testing.T, conn *pgx.Conn, slot string, p *process) {
	t.Helper()
	ctx := context.Background()
	var text string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		t.Fatal(err)
	}
	target, _ := pglogrepl.ParseLSN(text)
	deadline := time.Now().Add(90 * time.Second)
	for {
		var confirmed *string
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&confirmed)
		if err == nil && confirmed != nil && p.streams() {
			if lsn, _ := pglogrepl.ParseLSN(*confirmed); lsn >= target {
				return
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) before catching up; output:\n%s", err, p.output.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s did not confirm %s within 90s (confirmed %v, streaming %v); output:\n%s", slot, target, confirmed, p.streams(), p.output.String())
		}
	}
}

// streams reports whether p has logged that it streams (text or JSON log).
func (p *process) streams() bool {
	out := p.output.String()
	return strings.Contains(out, "msg=streaming ") || strings.Contains(out, `"msg":"streaming"`)
}

// topicRecord is one consumed record with its decoded key and value.
type topicRecord struct {
	Partition int32
	Offset    int64
	ValueLen  int // -1 for a tombstone
	Key       map[string]any
	KeyRaw    string
	Value     map[string]any // nil for a tombstone
	Headers   map[string]string
}

// readTopic consumes a topic from the start to its current end and decodes
// every record with hamba/avro and the schema its Confluent header names,
// fetched from the registry.
func readTopic(t *testing.T, brokers, registryURL, topic string) []topicRecord {
	t.Helper()
	cache := &avro.SchemaCache{}
	return readTopicWith(t, brokers, registryURL, topic, func(schema string) (func([]byte) (map[string]any, error), error) {
		s, err := avro.ParseWithCache(schema, "", cache)
		if err != nil {
			return nil, err
		}
		return func(b []byte) (map[string]any, error) {
			var m map[string]any
			err := avro.Unmarshal(s, b, &m)
			return m, err
		}, nil
	})
}

// avroDecoder builds the decoder of one registered schema (its text).
type avroDecoder func(schema string) (func(payload []byte) (map[string]any, error), error)

// readTopicWith consumes a topic from the start to its current end and
// decodes every key and value, framed in the Confluent wire format, with
// the decoder newDecoder builds for the schema its header names.
func readTopicWith(t *testing.T, brokers, registryURL, topic string, newDecoder avroDecoder) []topicRecord {
	t.Helper()
	// A bound, not an expectation: a few hundred thousand records decoded
	// under -race on a loaded 2-core machine took more than a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	defer func() { t.Logf("read %s to its end in %v", topic, time.Since(began).Round(time.Millisecond)) }()
	rcl, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		t.Fatal(err)
	}
	decoders := map[int]func([]byte) (map[string]any, error){}
	decode := func(b []byte) map[string]any {
		t.Helper()
		if len(b) < 5 || b[0] != 0 {
			t.Fatalf("record in %s lacks the Confluent header: % x", topic, b)
		}
		id := int(binary.BigEndian.Uint32(b[1:5]))
		d, ok := decoders[id]
		if !ok {
			ss, err := rcl.SchemaByID(ctx, id)
			if err != nil {
				t.Fatalf("schema %d: %v", id, err)
			}
			if d, err = newDecoder(ss.Schema); err != nil {
				t.Fatalf("parse schema %d of %s: %v\n%s", id, topic, err, ss.Schema)
			}
			decoders[id] = d
		}
		m, err := d(b[5:])
		if err != nil {
			t.Fatalf("decode a record of %s with schema %d: %v", topic, id, err)
		}
		return m
	}
	var out []topicRecord
	_, err = broker.ReadToEnd(ctx, []kgo.Opt{kgo.SeedBrokers(brokers)}, topic, nil, func(r *kgo.Record) error {
		rec := topicRecord{Partition: r.Partition, Offset: r.Offset, ValueLen: -1, Key: decode(r.Key), KeyRaw: string(r.Key), Headers: map[string]string{}}
		if r.Value != nil {
			rec.Value = decode(r.Value)
			rec.ValueLen = len(r.Value)
		}
		for _, h := range r.Headers {
			rec.Headers[h.Key] = string(h.Value)
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		t.Fatalf("consume %s: %v", topic, err)
	}
	return out
}

// latestByKey keeps the last record of each key (what compaction keeps).
func latestByKey(records []topicRecord) map[string]topicRecord {
	m := map[string]topicRecord{}
	for _, r := range records {
		m[r.KeyRaw] = r
	}
	return m
}

// pgText renders a decoded Avro value the way PostgreSQL prints the column
// with TimeZone=UTC, so topic state and table state compare as strings.
func pgText(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return x
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	case bool:
		if x {
			return "t"
		}
		return "f"
	case *big.Rat:
		return x.FloatString(2)
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pgText(e)
		}
		return "{" + strings.Join(parts, ",") + "}"
	case map[string]any: // a union decoded as {"type": value}
		for _, inner := range x {
			return pgText(inner)
		}
		return "NULL"
	default:
		return fmt.Sprintf("%v", x)
	}
}

// tableState reads every row as column → text, keyed by the query's "key"
// column when it has one (not compared), else by its "id" column.
func tableState(t *testing.T, conn *pgx.Conn, query string) map[string]map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), query, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	fields := rows.FieldDescriptions()
	for rows.Next() {
		raw := rows.RawValues()
		row := map[string]string{}
		for i, f := range fields {
			if raw[i] == nil {
				row[f.Name] = "NULL"
			} else {
				row[f.Name] = string(raw[i])
			}
		}
		key, ok := row["key"]
		if ok {
			delete(row, "key")
		} else {
			key = row["id"]
		}
		out[key] = row
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// assertConverged checks guarantee 4 for one topic: the latest record per
// key equals the table row, and every key not in the table ends in a
// tombstone.
func assertConverged(t *testing.T, records []topicRecord, table map[string]map[string]string, deleted []string) {
	t.Helper()
	latest := map[string]topicRecord{}
	for _, r := range latestByKey(records) {
		latest[pgText(r.Key["id"])] = r
	}
	var ids []string
	for id := range table {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r, ok := latest[id]
		if !ok {
			t.Errorf("key %s: in the table, missing from the topic", id)
			continue
		}
		if r.Value == nil {
			t.Errorf("key %s: in the table, but the topic ends in a tombstone", id)
			continue
		}
		for col, want := range table[id] {
			if got := pgText(r.Value[col]); got != want {
				t.Errorf("key %s column %s: got %q on the topic, want %q from the table", id, col, got, want)
			}
		}
		if len(r.Value) != len(table[id]) {
			t.Errorf("key %s: value has %d fields, table row has %d", id, len(r.Value), len(table[id]))
		}
	}
	for id, r := range latest {
		if _, live := table[id]; !live && r.Value != nil {
			t.Errorf("key %s: not in the table, but its latest record is not a tombstone: %v", id, r.Value)
		}
	}
	for _, id := range deleted {
		r, ok := latest[id]
		if !ok {
			t.Errorf("deleted key %s: never on the topic", id)
		} else if r.Value != nil {
			t.Errorf("deleted key %s: latest record is %v, want a tombstone", id, r.Value)
		}
	}
}

// waitSlot polls until the replication slot exists and has found its
// consistent point: from then on every commit is past it and arrives
// through the stream. The slot is listed before that, while PostgreSQL
// waits for the transactions running at its creation (an autovacuum's
// ANALYZE, say); a commit then may belong to the snapshot instead.
// confirmed_flush_lsn is set once the point is found.
func waitSlot(t *testing.T, conn *pgx.Conn, slot string, p *process) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL`, slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) before creating slot %s; output:\n%s", err, slot, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s not created within 60s; output:\n%s", slot, p.output.String())
		}
	}
}

// waitSlotReleased waits until replication slot name is inactive. A
// replicator that exited has closed its replication connection, but
// PostgreSQL's walsender holds the slot until it has read the close and
// exited, a moment later on a loaded machine: dropping, peeking or
// checking the slot before that finds it "active for PID".
func waitSlotReleased(t *testing.T, conn *pgx.Conn, slot string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var active bool
		if err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil {
			t.Fatalf("look up slot %s: %v", slot, err)
		}
		if !active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s still active a minute after replicator exited", slot)
		}
		time.Sleep(20 * time.Millisecond) // polling interval toward the deadline
	}
}

// waitOutput polls until the process has printed want.
func waitOutput(t *testing.T, p *process, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.output.String(), want) {
		select {
		case err := <-p.done:
			t.Fatalf("replicator exited (%v) before printing %q; output:\n%s", err, want, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicator did not print %q within 60s; output:\n%s", want, p.output.String())
		}
	}
}
