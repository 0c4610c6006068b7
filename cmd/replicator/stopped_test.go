package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestStatusOfAStoppedReadModel: a read model whose sink stopped with an
// error (a poison record, on_error: stop) needs attention though it is
// only a record behind: status exits 1, names the stop and its error,
// and says it in JSON.
func TestStatusOfAStoppedReadModel(t *testing.T) {
	f := newSinkFixture(t)
	f.put(1, "ann")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	poison := &kgo.Record{Topic: "customers", Key: f.key(map[string]any{"id": int64(2)}), Value: []byte("not avro")}
	if err := f.cl.ProduceSync(ctx, poison).FirstErr(); err != nil {
		t.Fatal(err)
	}
	store := "sqlite://" + filepath.Join(t.TempDir(), "read.db")
	cfg := sinkConfig(t, f.brokers, f.registryURL, store, false)
	var out bytes.Buffer
	if err := run(ctx, []string{"sink", "--config", cfg}, &out, &out); err == nil || ctx.Err() != nil {
		t.Fatalf("sink: got %v (context %v), want it to stop on the poison record; output:\n%s", err, ctx.Err(), out.String())
	}

	text, err := runCLI(t, "status", "--config", cfg, "--json")
	var exit exitError
	if !errors.As(err, &exit) {
		t.Fatalf("status of a stopped read model: got %v, want a non-zero exit\n%s", err, text)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(text), &rep); err != nil {
		t.Fatalf("status --json: %v: %q", err, text)
	}
	if len(rep.ReadModels) != 1 || rep.ReadModels[0].Stopped == nil || !strings.Contains(rep.ReadModels[0].Stopped.Error, "Confluent wire-format header") ||
		time.Since(rep.ReadModels[0].Stopped.At) > time.Minute {
		t.Errorf("status --json: read models %+v, want good stopped just now on the poison record", rep.ReadModels)
	}
	if len(rep.Attention) != 1 || !strings.HasPrefix(rep.Attention[0], "read model good stopped at ") ||
		!strings.HasSuffix(rep.Attention[0], "fix the cause and start `replicator sink` again") {
		t.Errorf("attention: %q", rep.Attention)
	}
	if !strings.Contains(text, `"stopped": {`) {
		t.Errorf("status --json lacks the stopped field:\n%s", text)
	}
	text, err = runCLI(t, "status", "--config", cfg)
	if !errors.As(err, &exit) || !strings.Contains(text, "read model good stopped at ") {
		t.Errorf("status text: got %v, want a non-zero exit naming the stop:\n%s", err, text)
	}
	text, err = runCLI(t, "check", "--config", cfg)
	if err == nil || !strings.Contains(text, "read model good stopped at ") {
		t.Errorf("check: got %v, want the stop as a problem:\n%s", err, text)
	}
}
