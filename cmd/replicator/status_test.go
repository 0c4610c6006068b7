package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// status against a running replicator (slot active, topic end offsets from
// the embedded broker) and a stopped one (slot inactive, broker gone, the
// retained WAL threshold deciding the exit code), in text and JSON.
func TestStatus(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, `CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT g, 'x' FROM generate_series(1, 20) g;`)
	cfgPath := writeYAML(t, fmt.Sprintf(`
source: {url: %q, slot: status_slot, status_interval: 100ms}
data_dir: %q
kafka: {listen: %q, partitions: 2}
registry: {listen: %q}
entities: [{table: items}]
`, dsn, t.TempDir(), closedAddr(t), closedAddr(t)))
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runObserved(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil) }()
	t.Cleanup(func() {
		stop()
		<-done
	})

	// Running: wait until the snapshot's 20 records are on the topic.
	var rep statusReport
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := runCLI(t, "status", "--config", cfgPath, "--json")
		if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
			t.Fatalf("status --json printed no JSON (%v): %q", jerr, out)
		}
		if err == nil && rep.Slot.Active && len(rep.Topics) == 1 && rep.Topics[0].Records == 20 && rep.Snapshot != nil && rep.Snapshot.Complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of a running replicator never showed an active slot, a complete snapshot and 20 records: err %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rep.Slot.ConfirmedLSN == "" || !strings.Contains(rep.Slot.ConfirmedLSN, "/") || len(rep.Topics[0].EndOffsets) != 2 || rep.Snapshot.Rows != 20 {
		t.Errorf("status --json of a running replicator: %+v", rep)
	}
	out, err := runCLI(t, "status", "--config", cfgPath)
	if err != nil {
		t.Fatalf("status of a healthy running replicator failed: %v\n%s", err, out)
	}
	for _, want := range []string{"status_slot", "active (walsender pid", "snapshot", "complete", "20 rows", "items", "20 records written", "ok: nothing needs attention"} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}

	// Stopped: the slot is inactive and the embedded broker gone.
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	done <- nil // for the cleanup
	waitSlotReleased(t, dsn, "status_slot")
	out, err = runCLI(t, "status", "--config", cfgPath)
	if err != nil {
		t.Fatalf("status of a stopped replicator within thresholds failed: %v\n%s", err, out)
	}
	for _, want := range []string{"inactive", "does not answer", "ok: nothing needs attention"} {
		if !strings.Contains(out, want) {
			t.Errorf("status text of a stopped replicator lacks %q:\n%s", want, out)
		}
	}
	// Any retained WAL beyond a threshold of 0 needs attention: exit 1.
	out, err = runCLI(t, "status", "--config", cfgPath, "--json", "--max-retained-wal-bytes", "0")
	var exit exitError
	if !errors.As(err, &exit) {
		t.Fatalf("status of an inactive slot over its threshold: got %v, want a non-zero exit\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v: %q", err, out)
	}
	if rep.Slot.Active || rep.Slot.RetainedWAL == 0 || len(rep.Attention) != 1 || !strings.Contains(rep.Attention[0], "inactive") || rep.KafkaError == "" {
		t.Errorf("status --json of a stopped replicator: %+v", rep)
	}
	out, err = runCLI(t, "status", "--config", cfgPath, "--max-retained-wal-bytes", "0")
	if !errors.As(err, &exit) || !strings.Contains(out, "needs attention:") || !strings.Contains(out, "--max-retained-wal-bytes") {
		t.Errorf("status text over the threshold: err %v\n%s", err, out)
	}
}

// TestStatusTopicMissing: an entity topic that does not exist is reported
// as such, not as an empty topic with no partitions.
func TestStatusTopicMissing(t *testing.T) {
	t.Parallel()
	emb, err := broker.StartEmbedded(t.Context(), broker.EmbeddedConfig{Listen: closedAddr(t), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(emb.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 2, 1, nil, "present"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(writeYAML(t, fmt.Sprintf(`
source: {url: "postgres://u@127.0.0.1:1/d"}
kafka: {brokers: [%q]}
entities: [{table: present}, {table: absent}]
`, emb.Addr())), nil)
	if err != nil {
		t.Fatal(err)
	}
	topics, err := topicEnds(t.Context(), cfg)
	if err != nil {
		t.Fatalf("topicEnds: %v", err)
	}
	if len(topics) != 2 {
		t.Fatalf("got %d topics, want 2: %+v", len(topics), topics)
	}
	if p := topics[0]; p.Topic != "present" || p.Error != "" || len(p.EndOffsets) != 2 {
		t.Errorf("existing topic: got %+v, want 2 partitions and no error", p)
	}
	if a := topics[1]; a.Topic != "absent" || !strings.Contains(a.Error, "does not exist") {
		t.Errorf("missing topic: got %+v, want an error saying it does not exist", a)
	}
}

// TestStatusAndCheckBoundTheSourceConnection: a source that accepts the
// connection and never answers fails status, check and schema within their
// bounds instead of holding them forever.
func TestStatusAndCheckBoundTheSourceConnection(t *testing.T) {
	t.Parallel()
	silent := silentAddr(t)
	cfg := writeYAML(t, fmt.Sprintf(`
source: {url: "postgres://u@%s/d"}
data_dir: %q
kafka: {brokers: [%q]}
entities: [{table: t}]
`, silent, t.TempDir(), closedAddr(t)))
	for _, cmd := range []string{"status", "check", "schema"} {
		start := time.Now()
		out, err := runCLI(t, cmd, "--config", cfg)
		if err == nil {
			t.Errorf("%s passed against a silent source:\n%s", cmd, out)
		}
		if took := time.Since(start); took > time.Minute {
			t.Errorf("%s took %v against a silent source", cmd, took)
		}
		if err != nil {
			out += err.Error() // schema returns the failure, not printed
		}
		if !strings.Contains(out, "timeout") && !strings.Contains(out, "deadline") {
			t.Errorf("%s output does not say the connection timed out:\n%s", cmd, out)
		}
	}
}

// status shows each read model's stored offsets against its topics' end
// offsets, in text and JSON, and exits 1 when one lags beyond
// --max-read-model-lag.
func TestStatusReadModels(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, `CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT g, 'x' FROM generate_series(1, 20) g;`)
	dir := t.TempDir()
	cfgPath := writeYAML(t, fmt.Sprintf(`
source: {url: %q, slot: rm_slot, status_interval: 100ms}
data_dir: %q
kafka: {listen: %q, partitions: 2}
registry: {listen: %q}
entities: [{table: items}]
read_models:
  - name: items_rm
    store: %q
    key: id
    sources: [{entity: items, key: id, columns: {v: v}}]
`, dsn, dir, closedAddr(t), closedAddr(t), "sqlite://"+dir+"/read.db"))
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runObserved(ctx, cfg, quiet, nil, nil) }()
	t.Cleanup(func() {
		stop()
		<-done
	})

	// statusUntil polls status --json until cond holds.
	statusUntil := func(what string, args []string, cond func(statusReport, error) bool) statusReport {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := runCLI(t, append([]string{"status", "--config", cfgPath, "--json"}, args...)...)
			var rep statusReport
			if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
				t.Fatalf("status --json printed no JSON (%v): %q", jerr, out)
			}
			if cond(rep, err) {
				return rep
			}
			if time.Now().After(deadline) {
				t.Fatalf("status never showed %s: err %v\n%s", what, err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Before the sink's first start: everything is lag, nothing stored.
	rep := statusUntil("the topic's 20 records", nil, func(r statusReport, err error) bool {
		return err == nil && len(r.Topics) == 1 && r.Topics[0].Records == 20 && len(r.ReadModels) == 1 && r.ReadModels[0].Lag == 20
	})
	for _, p := range rep.ReadModels[0].Partitions {
		if p.Stored != -1 {
			t.Errorf("partition before the sink ran: %+v, want none stored", p)
		}
	}
	sctx, stopSink := context.WithCancel(ctx)
	sinkDone := make(chan error, 1)
	go func() { sinkDone <- runSinks(sctx, cfg, quiet, nil, false) }()
	t.Cleanup(func() {
		stopSink()
		<-sinkDone
	})
	rep = statusUntil("the read model caught up", nil, func(r statusReport, err error) bool {
		return err == nil && len(r.ReadModels) == 1 && r.ReadModels[0].Lag == 0 && len(r.ReadModels[0].Partitions) == 2 &&
			r.ReadModels[0].Partitions[0].Stored+r.ReadModels[0].Partitions[1].Stored == 20
	})
	for _, p := range rep.ReadModels[0].Partitions {
		if p.Topic != "items" || p.Stored != p.End || p.Lag != 0 {
			t.Errorf("caught-up partition: %+v", p)
		}
	}

	// The sink stops; five more records: five behind.
	stopSink()
	if err := <-sinkDone; err != nil {
		t.Fatalf("sink: %v", err)
	}
	sinkDone <- nil // for the cleanup
	conn := pgtest.Connect(t, dsn)
	if _, err := conn.Exec(context.Background(), `INSERT INTO items SELECT g, 'y' FROM generate_series(21, 25) g`); err != nil {
		t.Fatal(err)
	}
	statusUntil("five records behind, within the default threshold", nil, func(r statusReport, err error) bool {
		return err == nil && len(r.ReadModels) == 1 && r.ReadModels[0].Lag == 5
	})
	out, err := runCLI(t, "status", "--config", cfgPath, "--json", "--max-read-model-lag", "4")
	var exit exitError
	if !errors.As(err, &exit) {
		t.Fatalf("status of a read model over --max-read-model-lag: got %v, want a non-zero exit\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v: %q", err, out)
	}
	if len(rep.Attention) != 1 || !strings.Contains(rep.Attention[0], "read model items_rm is 5 records behind") {
		t.Errorf("attention: %q", rep.Attention)
	}
	out, err = runCLI(t, "status", "--config", cfgPath, "--max-read-model-lag", "4")
	if !errors.As(err, &exit) {
		t.Errorf("status text over --max-read-model-lag: got %v, want a non-zero exit", err)
	}
	for _, want := range []string{"items_rm", "5 records behind", "items[0]", "items[1]", "stored ", "--max-read-model-lag 4"} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusExternalBrokerDown: brokers of kafka.brokers that do not
// answer need attention (run produces to them), naming the key; the
// embedded broker not answering does not (it runs only inside run).
func TestStatusExternalBrokerDown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		kafka string
		want  bool
	}{
		{fmt.Sprintf("{brokers: [%q]}", closedAddr(t)), true},
		{fmt.Sprintf("{listen: %q}", closedAddr(t)), false},
	} {
		cfg, err := config.Load(writeYAML(t, fmt.Sprintf(`
source: {url: "postgres://u@%s/d"}
data_dir: %q
kafka: %s
registry: {listen: %q}
entities: [{table: t}]
`, closedAddr(t), t.TempDir(), tt.kafka, closedAddr(t))), nil)
		if err != nil {
			t.Fatal(err)
		}
		rep := collectStatus(t.Context(), cfg, false, defaultMaxRetainedWAL, defaultMaxLagBytes, defaultMaxReadModelLag)
		got := false
		for _, a := range rep.Attention {
			if strings.Contains(a, "kafka.brokers") {
				got = true
			}
		}
		if got != tt.want || rep.KafkaError == "" {
			t.Errorf("kafka %s: attention %q, kafka_error %q; want an attention naming kafka.brokers: %v", tt.kafka, rep.Attention, rep.KafkaError, tt.want)
		}
	}
}

// TestStatusRejectsNegativeReadModelLag: a negative threshold would make
// every read model, 0 records behind, "over --max-read-model-lag -1".
func TestStatusRejectsNegativeReadModelLag(t *testing.T) {
	t.Parallel()
	out, err := runCLI(t, "status", "--config", writeYAML(t, "read_models: []\n"), "--max-read-model-lag", "-1")
	if err == nil || !strings.Contains(err.Error(), "--max-read-model-lag: -1 is negative") {
		t.Errorf("status --max-read-model-lag -1: got %v, want it refused naming the flag\n%s", err, out)
	}
}

// silentAddr is a loopback address that accepts connections and never
// answers on them (a hung server), until the test ends.
func silentAddr(t *testing.T) string {
	t.Helper()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			conns = append(conns, c) // held open, never answered
		}
	})
	t.Cleanup(func() {
		silent.Close()
		held.Wait()
	})
	return silent.Addr().String()
}
