package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/bench/barereader"
	"github.com/replicator/replicator/broker"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// harness is what every benchmark shares: the options, a scratch
// directory, the programs it runs, and where progress goes.
type harness struct {
	opts options
	root string // module root
	work string // scratch directory, removed at the end unless -keep

	replicator, bareReader, kfakeServer, sourceDrop string // built binaries

	progress io.Writer

	ports portAllocator // every service's loopback port: never one twice
}

// build compiles the programs the benchmarks run, once.
func (h *harness) build(ctx context.Context) error {
	bin := filepath.Join(h.work, "bin")
	for _, p := range []struct {
		dst *string
		pkg string
	}{
		{&h.replicator, "./cmd/replicator"},
		{&h.bareReader, "./bench/cmd/barereader"},
		{&h.kfakeServer, "./bench/cmd/kfakeserver"},
		{&h.sourceDrop, "./bench/cmd/sourcedrop"},
	} {
		*p.dst = filepath.Join(bin, filepath.Base(p.pkg))
		cmd := exec.CommandContext(ctx, "go", "build", "-o", *p.dst, p.pkg)
		cmd.Dir = h.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
		}
	}
	return nil
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// dir creates a fresh directory under the scratch directory.
func (h *harness) dir(name string) (string, error) {
	d := filepath.Join(h.work, name)
	if err := os.RemoveAll(d); err != nil {
		return "", err
	}
	return d, os.MkdirAll(d, 0o750)
}

// replicatorRun configures one `replicator run`.
type replicatorRun struct {
	name     string // names its directory and log
	dsn      string
	slot     string
	snapshot string   // "never" or "initial"
	brokers  []string // empty: the embedded broker
	patterns []string // log lines to timestamp; "streaming" is always watched
	tables   []string // entities, in schema public; nil: the bench table alone
	metrics  bool     // metrics.listen on a free loopback port (nothing scrapes it)
}

// replicatorProc is a running replicator and where its records go.
type replicatorProc struct {
	*child
	dir      string
	brokers  []string // where its topic is, embedded or not
	registry string   // its embedded registry's URL
}

// startReplicator writes a config and starts `replicator run` on it, with
// the embedded broker and registry on free loopback ports unless brokers
// are given.
func (h *harness) startReplicator(rr replicatorRun) (*replicatorProc, error) {
	dir, err := h.dir(rr.name)
	if err != nil {
		return nil, err
	}
	kafkaListen, err := h.ports.addr()
	if err != nil {
		return nil, err
	}
	registryListen, err := h.ports.addr()
	if err != nil {
		return nil, err
	}
	brokers := rr.brokers
	if len(brokers) == 0 {
		brokers = []string{kafkaListen}
	}
	cfg := map[string]any{
		"data_dir": filepath.Join(dir, "data"),
		"log":      map[string]any{"level": "info"},
		"source": map[string]any{
			"url":             rr.dsn,
			"slot":            rr.slot,
			"publication":     publication,
			"snapshot":        rr.snapshot,
			"status_interval": statusInterval.String(),
		},
		"kafka":    map[string]any{"listen": kafkaListen},
		"registry": map[string]any{"listen": registryListen},
		"entities": entities(rr.tables),
	}
	if len(rr.brokers) > 0 {
		cfg["kafka"] = map[string]any{"brokers": rr.brokers}
	}
	if h.opts.linger > 0 {
		cfg["kafka"].(map[string]any)["linger"] = h.opts.linger.String()
	}
	if rr.metrics {
		metricsListen, err := h.ports.addr()
		if err != nil {
			return nil, err
		}
		cfg["metrics"] = map[string]any{"listen": metricsListen}
	}
	// JSON is YAML: no YAML encoder needed.
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "replicator.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	args := []string{"run", "--config", path}
	if h.opts.profile != "" {
		// Written when the run is stopped; profiling costs a few percent.
		args = append(args, "--profile-dir", filepath.Join(h.opts.profile, rr.name))
	}
	c, err := startChild("replicator", filepath.Join(dir, "replicator.log"), append(rr.patterns, "msg=streaming"),
		h.replicator, args...)
	if err != nil {
		return nil, err
	}
	return &replicatorProc{child: c, dir: dir, brokers: brokers, registry: "http://" + registryListen}, nil
}

// entities is the entities: list of a replicator config for tables
// (default: the bench table).
func entities(tables []string) []map[string]any {
	if len(tables) == 0 {
		tables = []string{tableName}
	}
	out := make([]map[string]any, len(tables))
	for i, t := range tables {
		out[i] = map[string]any{"table": "public." + t}
	}
	return out
}

// startBareReader creates nothing: slot must exist. The reader logs
// "streaming" once replication has started.
// With latency >= 0 it records commit→receive latencies, leaving out the
// first latency rows.
func (h *harness) startBareReader(name, dsn, slot string, latency int64, extra ...string) (*child, error) {
	dir, err := h.dir(name)
	if err != nil {
		return nil, err
	}
	args := []string{"-url", dsn, "-slot", slot, "-publication", publication, "-app", bareApp,
		"-status-interval", statusInterval.String()}
	if latency >= 0 {
		args = append(args, "-latency", "-latency-skip", fmt.Sprint(latency))
	}
	args = append(args, extra...)
	return startChild("bare reader", filepath.Join(dir, "barereader.log"), []string{"msg=streaming"}, h.bareReader, args...)
}

// bareApp is the bare reader's application_name; replicator's is "replicator".
const bareApp = "barereader"

// bareResult stops the bare reader and returns what it read.
func bareResult(c *child) (barereader.Result, error) {
	var res barereader.Result
	if err := c.stop(); err != nil {
		return res, err
	}
	if err := json.Unmarshal(c.stdout(), &res); err != nil {
		return res, fmt.Errorf("bare reader result %q: %w", c.stdout(), err)
	}
	return res, nil
}

// startKfakeServer starts the broker as a separate process and returns it
// with its address. Its data lives in the child's directory.
func (h *harness) startKfakeServer(name string, args ...string) (*child, string, error) {
	dir, err := h.dir(name)
	if err != nil {
		return nil, "", err
	}
	addr, err := h.ports.addr()
	if err != nil {
		return nil, "", err
	}
	c, err := startChild("kfakeserver", filepath.Join(dir, "kfakeserver.log"), []string{"msg=listening"},
		h.kfakeServer, append([]string{"-listen", addr, "-data-dir", filepath.Join(dir, "data")}, args...)...)
	if err != nil {
		return nil, "", err
	}
	if _, err := c.waitLine(context.Background(), "msg=listening", 30*time.Second); err != nil {
		c.kill()
		return nil, "", err
	}
	return c, addr, nil
}

// streamFigures are what a stream measurement reports.
type streamFigures struct {
	startup  time.Duration // process start → streaming
	elapsed  time.Duration // streaming → target confirmed
	cpu      time.Duration // of the reader process while streaming
	walCPU   time.Duration // of its walsender while streaming
	segments int64         // TCP data segments the walsender sent while streaming, unless segsErr
	segsErr  error         // why segments could not be counted
	peakRSS  int64         // of the reader process, whole life
	finished time.Time
}

// measureStream times a reader (replicator or the bare reader) that
// streams slot from the moment it logs "streaming" until the slot's
// confirmed position reaches target, and samples the CPU time of the
// reader and of its walsender (found by application_name app) over that
// window, and the reader's peak RSS. The reader keeps running.
func measureStream(ctx context.Context, conn *pgx.Conn, c *child, slot, app string, target pglogrepl.LSN, timeout time.Duration) (streamFigures, error) {
	var f streamFigures
	t0, err := c.waitLine(ctx, "msg=streaming", 2*time.Minute)
	if err != nil {
		return f, err
	}
	f.startup = t0.Sub(c.started)
	wal, err := findWalsender(ctx, conn, app)
	if err != nil {
		return f, errors.Join(err, c.alive())
	}
	cpu, err := startCPU(c, wal)
	if err != nil {
		return f, err
	}
	segs0, segsErr := tcpSegmentsSent(ctx, wal.serverPort, wal.clientPort)
	t1, err := waitConfirmed(ctx, conn, slot, target, timeout, c.alive)
	if err != nil {
		return f, err
	}
	used, err1 := cpu.end()
	rss, err2 := procPeakRSS(c.pid())
	if err := errors.Join(err1, err2); err != nil {
		return f, err
	}
	// A figure that explains the others, not worth failing a run over.
	segs1, err := tcpSegmentsSent(ctx, wal.serverPort, wal.clientPort)
	f.segments, f.segsErr = segs1-segs0, errors.Join(segsErr, err)
	f.elapsed, f.cpu, f.walCPU, f.peakRSS, f.finished = t1.Sub(t0), used.reader, used.walsender, rss, t1
	return f, nil
}

// streamTimeout bounds a stream of rows changes: generous for a slow
// machine, finite for a broken one.
func streamTimeout(rows int64) time.Duration {
	return 2*time.Minute + time.Duration(rows/2000)*time.Second
}

// topicRecords returns how many records the topics of tables hold (the
// sum of their partitions' end offsets; default the bench table's).
func topicRecords(ctx context.Context, brokers []string, tables ...string) (int64, error) {
	if len(tables) == 0 {
		tables = []string{tableName}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	var n int64
	for _, table := range tables {
		ends, err := broker.EndOffsets(ctx, adm, table)
		if err != nil {
			return 0, err
		}
		for _, o := range ends {
			n += o
		}
	}
	return n, nil
}

// checkRecords fails unless the topics of tables (default the bench
// table's) hold exactly want records: every change, once.
func checkRecords(ctx context.Context, brokers []string, want int64, tables ...string) error {
	got, err := topicRecords(ctx, brokers, tables...)
	if err != nil {
		return err
	}
	if got != want {
		if len(tables) == 0 {
			tables = []string{tableName}
		}
		return fmt.Errorf("topics %s hold %d records, want %d", strings.Join(tables, ", "), got, want)
	}
	return nil
}

// mb converts bytes to MB (MiB).
func mb(b int64) float64 { return float64(b) / (1 << 20) }

// scaled returns n×scale, at least min.
func scaled(n int64, scale float64, minimum int64) int64 {
	return max(int64(float64(n)*scale+0.5), minimum)
}

// thousands formats n with thousands separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
