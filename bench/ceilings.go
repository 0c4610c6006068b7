package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// The truer ceilings of the stream benchmarks, beside the bare reader on
// the same backlog in the same run (issue 14): how fast the walsender
// decodes the WAL with no client at all, and how fast replicator's own
// source reads it when what follows it (mapping, produce) costs nothing.
const (
	readerPeek = "peek" // slots decoded by pg_logical_slot_peek_binary_changes
	readerDrop = "drop" // slots read by bench/cmd/sourcedrop

	subjectPeek      = "walsender decoding, no network (peek)"
	subjectDrop      = "replicator's source, changes dropped"
	subjectEmbedded  = "replicator, embedded broker"
	subjectMetricsOn = "replicator, embedded broker, metrics on"

	readerMetricsOn = "met" // slots of replicator with metrics on

	// dropApp is sourcedrop's application_name.
	dropApp = "sourcedrop"
)

// peekSQL decodes a slot's changes up to an LSN with pgoutput, as the
// walsender does for a reader with the same options, and counts the row
// changes (I, U, D messages) inside the server: nothing crosses the
// network but the count. peek leaves the slot where it was.
const peekSQL = `SELECT count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68))
FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $3)`

// peek times the server's own decoding of the backlog from the run's peek
// slot, and its backend's CPU, and checks it counted every change. The
// figures it cannot have (a reader process, TCP segments) are left out.
func (b *walBacklog) peek(ctx context.Context, run int) (streamFigures, error) {
	var f streamFigures
	var pid int
	if err := b.conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return f, fmt.Errorf("backend pid: %w", err)
	}
	cpu0, err := procCPU(pid)
	if err != nil {
		return f, err
	}
	t := time.Now()
	var rows int64
	if err := b.conn.QueryRow(ctx, peekSQL, slotName(readerPeek, run), b.target.String(), publication).Scan(&rows); err != nil {
		return f, fmt.Errorf("peek slot %s: %w", slotName(readerPeek, run), err)
	}
	f.elapsed = time.Since(t)
	cpu1, err := procCPU(pid)
	if err != nil {
		return f, err
	}
	f.walCPU = cpu1 - cpu0
	if rows != b.rows {
		return f, fmt.Errorf("peek decoded %d row changes, want %d", rows, b.rows)
	}
	return f, nil
}

// peekSample keeps, of a stream sample, what a peek measures: its time,
// throughput and the backend's (walsender's stand-in) CPU.
func peekSample(smp sample) sample {
	out := sample{}
	for _, k := range []string{"rows_per_s", "seconds", "walsender_cpu_s", "walsender_busy"} {
		if x, ok := smp[k]; ok {
			out[k] = x
		}
	}
	return out
}

// sourceDropped streams the backlog with bench/cmd/sourcedrop from the
// run's drop slot, timed as the bare reader is, and checks it was handed
// every change.
func (b *walBacklog) sourceDropped(ctx context.Context, run int) (streamFigures, error) {
	slot := slotName(readerDrop, run)
	dir, err := b.h.dir(fmt.Sprintf("%s-%d-%s", b.prefix, run, readerDrop))
	if err != nil {
		return streamFigures{}, err
	}
	tables := b.tables
	if len(tables) == 0 {
		tables = []string{tableName}
	}
	qualified := make([]string, len(tables))
	for i, t := range tables {
		qualified[i] = "public." + t
	}
	c, err := startChild("sourcedrop", filepath.Join(dir, "sourcedrop.log"), []string{"msg=streaming"}, b.h.sourceDrop,
		"-url", b.cl.DSN(""), "-slot", slot, "-publication", publication, "-app", dropApp,
		"-state-dir", filepath.Join(dir, "state"), "-tables", strings.Join(qualified, ","),
		"-status-interval", statusInterval.String())
	if err != nil {
		return streamFigures{}, err
	}
	defer c.kill()
	f, err := measureStream(ctx, b.conn, c, slot, dropApp, b.target, streamTimeout(b.rows))
	b.noteSegments(f)
	if err != nil {
		return f, err
	}
	if err := c.stop(); err != nil {
		return f, err
	}
	var res struct {
		Rows int64 `json:"rows"`
	}
	if err := json.Unmarshal(c.stdout(), &res); err != nil {
		return f, errors.Join(fmt.Errorf("sourcedrop result %q: %w", c.stdout(), err), b.h.cleanup(dir))
	}
	if res.Rows != b.rows {
		return f, fmt.Errorf("sourcedrop was handed %d changes, want %d", res.Rows, b.rows)
	}
	return f, b.h.cleanup(dir)
}

// truerCeilingsAbout describes the reference rows, for the benchmarks'
// about texts.
const truerCeilingsAbout = "Reference rows (reported, not judged), each from its own slot on the same WAL in the same runs: " +
	"\"" + subjectPeek + "\" is `pg_logical_slot_peek_binary_changes` with pgoutput and the same publication (`proto_version '1'`), " +
	"counting row changes inside the server (its walsender CPU is that backend's; peek materialises its output in a tuplestore " +
	"first, a cost a walsender does not have, so its time bounds the decoding's alone from above); " +
	"\"" + subjectDrop + "\" is replicator's `source` package (`bench/cmd/sourcedrop`) with a handler that acknowledges every " +
	"change at once and keeps nothing, timed as the readers are. The table after the figures says where the time goes."

// streamLayers is the breakdown of the stream benchmarks' time, from the
// server's decoding alone to the whole of replicator.
func streamLayers(full string) []layer {
	return []layer{
		{subject: subjectPeek, adds: "the walsender's decoding of the WAL with pgoutput (no client, no network)"},
		{subject: "bare reader", adds: "sending it over loopback, and a minimal client parsing and decoding it"},
		{subject: subjectDrop, adds: "replicator's source instead of the minimal client (its parsing, decoding, checkpoint)"},
		{subject: full, adds: "mapping to Avro, producing to the broker and waiting for its acks"},
	}
}
