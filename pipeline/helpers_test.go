package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testTimeout bounds every wait; the broker is in-process, so reaching it
// means something is stuck, not slow.
const testTimeout = 30 * time.Second

// Schema ids the test entity is "registered" with; distinct so a swapped
// key and value header shows.
const (
	keySchemaID   = 7
	valueSchemaID = 8
)

// Column indexes of accountsTable.
const (
	colID = iota
	colEmail
	colBalance
	colActive
	colCreated
	colNote
	colAvatar
	colVersion
	colScore
	colBirthday
	numColumns
)

// accountsTable is a ten-column table keyed by id, as the source would
// describe it: NOT NULL and nullable columns of several kinds.
func accountsTable() *relation.Table {
	return &relation.Table{
		Schema: "public",
		Name:   "accounts",
		Columns: []relation.Column{
			{Name: "id", Type: relation.Type{Kind: relation.Int64, OID: 20, Name: "bigint"}},
			{Name: "email", Type: relation.Type{Kind: relation.Text, OID: 25, Name: "text"}},
			{Name: "balance", Type: relation.Type{Kind: relation.Numeric, OID: 1700, Name: "numeric(12,2)", Precision: 12, Scale: 2}, Nullable: true},
			{Name: "active", Type: relation.Type{Kind: relation.Bool, OID: 16, Name: "boolean"}},
			{Name: "created", Type: relation.Type{Kind: relation.TimestampTZ, OID: 1184, Name: "timestamp with time zone"}},
			{Name: "note", Type: relation.Type{Kind: relation.Text, OID: 25, Name: "text"}, Nullable: true},
			{Name: "avatar", Type: relation.Type{Kind: relation.Bytes, OID: 17, Name: "bytea"}, Nullable: true},
			{Name: "version", Type: relation.Type{Kind: relation.Int32, OID: 23, Name: "integer"}},
			{Name: "score", Type: relation.Type{Kind: relation.Float64, OID: 701, Name: "double precision"}, Nullable: true},
			{Name: "birthday", Type: relation.Type{Kind: relation.Date, OID: 1082, Name: "date"}, Nullable: true},
		},
		PrimaryKey: []string{"id"},
		Identity:   []string{"id"},
	}
}

// accountRow is a full row of accountsTable.
func accountRow(id int64, version int32) []any {
	return []any{
		id,
		fmt.Sprintf("user%d@example.com", id),
		"1234.50",
		true,
		time.Date(2024, 3, 5, 13, 7, 9, 123456000, time.UTC),
		"likes long walks",
		[]byte{0xde, 0xad, 0xbe, 0xef},
		version,
		0.25,
		time.Date(1990, 7, 14, 0, 0, 0, 0, time.UTC),
	}
}

// keyOnly is the old tuple PostgreSQL sends under REPLICA IDENTITY
// DEFAULT: the key, every other column nil.
func keyOnly(id int64) []any {
	row := make([]any, numColumns)
	row[colID] = id
	return row
}

// newEntities builds the pipeline's entity list for one table on topic.
func newEntities(t testing.TB, table *relation.Table, topic string) []Entity {
	t.Helper()
	e, err := mapping.NewEntity(mapping.Spec{Name: "account", Topic: topic}, table, mapping.Options{})
	if err != nil {
		t.Fatalf("NewEntity: %v", err)
	}
	return []Entity{{Mapping: e, KeySchemaID: keySchemaID, ValueSchemaID: valueSchemaID}}
}

// Change metadata used by most tests.
var (
	testLSN        = pglogrepl.LSN(0x16B3748)
	testCommitTime = time.Date(2024, 3, 5, 14, 7, 9, 123456789, time.FixedZone("CET", 3600))
)

const (
	testLSNText        = "0/16B3748"
	testCommitTimeText = "2024-03-05T13:07:09.123456Z" // UTC, truncated to microseconds
	testXID            = 4711
)

// change builds a change of accountsTable (TableIndex 0) with a zero Ack.
func change(table *relation.Table, op source.Op, newRow, oldRow []any) *source.Change {
	c := &source.Change{
		Op: op, Table: table, TableIndex: 0, New: newRow, Old: oldRow,
		LSN: testLSN, CommitTime: testCommitTime, XID: testXID,
	}
	if op == source.OpSnapshot {
		c.XID = 0
	}
	return c
}

// countAck is an acker counting its Done calls.
type countAck struct{ n atomic.Int32 }

func (a *countAck) Done()        { a.n.Add(1) }
func (a *countAck) count() int32 { return a.n.Load() }

// fakeProducer records every Produce call and leaves its promise to the
// test. Its Flush returns at once, as kgo's does for records that never got
// into its buffer (they failed before: too large for the buffer, context
// canceled while Produce blocked): their promises still run later, on
// another goroutine.
type fakeProducer struct {
	mu   sync.Mutex // guards sent
	sent []sent
}

// sent is one Produce call.
type sent struct {
	r       *kgo.Record
	promise func(*kgo.Record, error)
}

func (f *fakeProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, sent{r, promise})
}

func (f *fakeProducer) Flush(context.Context) error { return nil }

func (f *fakeProducer) produced() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sent(nil), f.sent...)
}

// complete runs the promise of the i-th record with err.
func (f *fakeProducer) complete(i int, err error) {
	s := f.produced()[i]
	s.promise(s.r, err)
}

// startBroker starts an in-process kfake broker on a free port, closed at
// test cleanup.
func startBroker(t testing.TB) *broker.Embedded {
	t.Helper()
	e, err := broker.StartEmbedded(t.Context(), broker.EmbeddedConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// newClient returns a client of addr built from broker's option functions,
// with producer options when p is not nil; closed at test cleanup.
func newClient(t testing.TB, addr string, p *broker.ProducerConfig, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts, err := broker.Config{Brokers: []string{addr}, ClientID: "pipeline-test"}.ClientOptions()
	if err != nil {
		t.Fatalf("ClientOptions: %v", err)
	}
	if p != nil {
		opts = append(opts, broker.ProducerOptions(*p)...)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// topicName derives a valid, unique topic name from the test name.
func topicName(t testing.TB) string {
	return strings.NewReplacer("/", ".", " ", "_", "#", "_").Replace(t.Name())
}

// ensureTopic creates topic as broker.EnsureTopics does for an entity.
func ensureTopic(t testing.TB, addr, topic string, partitions int32, configs map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	adm := kadm.NewClient(newClient(t, addr, nil))
	if _, err := broker.EnsureTopics(ctx, adm, []broker.TopicSpec{{Name: topic, Partitions: partitions, Configs: configs}}); err != nil {
		t.Fatalf("EnsureTopics %s: %v", topic, err)
	}
}

// consume reads the first n records of topic and checks that the topic
// holds no more than that.
func consume(t testing.TB, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	cl := newClient(t, addr, nil, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume %s: got %d records before the deadline, want %d", topic, len(out), n)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consume %s[%d]: %v", topic, p, err)
		})
		out = append(out, fs.Records()...)
	}
	if got := endOffsetSum(t, addr, topic); got != int64(n) {
		t.Fatalf("topic %s holds %d records, want %d", topic, got, n)
	}
	return out
}

// endOffsetSum is the number of records ever written to topic.
func endOffsetSum(t testing.TB, addr, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	ends, err := broker.EndOffsets(ctx, kadm.NewClient(newClient(t, addr, nil)), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, o := range ends {
		sum += o
	}
	return sum
}

// headers returns a record's headers as a map, failing on a duplicate.
func headers(t testing.TB, r *kgo.Record) map[string]string {
	t.Helper()
	m := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		if _, dup := m[h.Key]; dup {
			t.Fatalf("header %q appears twice", h.Key)
		}
		m[h.Key] = string(h.Value)
	}
	return m
}

// decodeFramed splits Confluent framing off b, checks the schema id and
// decodes the Avro payload with schema.
func decodeFramed(t testing.TB, what string, b []byte, wantID int, schema string) map[string]any {
	t.Helper()
	id, payload, err := mapping.SplitConfluent(b)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if id != wantID {
		t.Fatalf("%s schema id: got %d, want %d", what, id, wantID)
	}
	codec := mapping.NewCodec()
	s, err := codec.Parse(schema)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	m, err := codec.Decode(s, payload)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return m
}

// rowMap is what decoding the value of row gives: column name → value.
func rowMap(table *relation.Table, row []any, columns ...string) map[string]any {
	m := make(map[string]any)
	for i, c := range table.Columns {
		if len(columns) > 0 && !slices.Contains(columns, c.Name) {
			continue
		}
		m[c.Name] = row[i]
	}
	return m
}

// sameMap compares decoded Avro values with row values: times by Equal,
// bytes by content, everything else by ==.
func sameMap(got, want map[string]any) bool {
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			return false
		}
		switch w := w.(type) {
		case time.Time:
			g, ok := g.(time.Time)
			if !ok || !g.Equal(w) {
				return false
			}
		case []byte:
			g, ok := g.([]byte)
			if !ok || !bytes.Equal(g, w) {
				return false
			}
		default:
			if g != w {
				return false
			}
		}
	}
	return true
}

// accountText is accountRow as PostgreSQL prints it, the way the snapshot
// hands rows over (source.Change.Text).
func accountText(id int64, version int32) [][]byte {
	return [][]byte{
		fmt.Appendf(nil, "%d", id),
		fmt.Appendf(nil, "user%d@example.com", id),
		[]byte("1234.50"),
		[]byte("t"),
		[]byte("2024-03-05 13:07:09.123456+00"),
		[]byte("likes long walks"),
		[]byte(`\xdeadbeef`),
		fmt.Appendf(nil, "%d", version),
		[]byte("0.25"),
		[]byte("1990-07-14"),
	}
}

// textChange is a snapshot change of accountsTable given as text.
func textChange(table *relation.Table, text [][]byte) *source.Change {
	c := change(table, source.OpSnapshot, nil, nil)
	c.Text = text
	return c
}
