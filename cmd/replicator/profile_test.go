package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestRunWritesProfiles runs `replicator run --profile-dir` until it
// streams, stops it as a signal would, and checks that both profiles were
// written as pprof's gzipped protobuf naming our own code. Not parallel:
// the CPU profiler is process-wide.
func TestRunWritesProfiles(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := newDatabase(t, pg, `CREATE TABLE items (id bigint PRIMARY KEY, name text);
		INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g;`)
	dir := filepath.Join(t.TempDir(), "prof")
	cfg := writeYAML(t, fmt.Sprintf("source: {url: %q, slot: prof}\ndata_dir: %q\nkafka: {listen: %q}\nregistry: {listen: %q}\nentities:\n  - table: items\n",
		dsn, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--config", cfg, "--profile-dir", dir}, &out, &out) }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "msg=streaming") {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("run did not start streaming; output:\n%s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v; output:\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v; output:\n%s", err, out.String())
	}
	// Sample types and function names are plain strings in the protobuf's
	// string table. A CPU profile of a short run may hold few samples, so
	// only its kind is checked; every allocation profile holds our code.
	for _, c := range []struct{ file, want string }{
		{cpuProfileFile, "nanoseconds"},
		{allocsProfileFile, "alloc_space"},
		{allocsProfileFile, "github.com/replicator/replicator/"},
	} {
		if raw := readGzip(t, filepath.Join(dir, c.file)); !bytes.Contains(raw, []byte(c.want)) {
			t.Errorf("%s does not mention %q (%d bytes): not the profile expected", c.file, c.want, len(raw))
		}
	}
}

// TestProfileDirError names the flag when the directory cannot be made.
func TestProfileDirError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "run", "--profile-dir", filepath.Join(file, "sub"))
	if err == nil || !strings.Contains(err.Error(), "--profile-dir") {
		t.Fatalf("got %v, want an error naming --profile-dir", err)
	}
}

func readGzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: not gzip: %v", path, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return raw
}

// syncBuffer is a bytes.Buffer the run goroutine writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
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

// TestSinkAndRebuildTakeProfileDir: sink and rebuild write their profiles
// too, also when the command fails (here: an unknown read model).
func TestSinkAndRebuildTakeProfileDir(t *testing.T) {
	brokers, registryURL := sinkFixture(t)
	cfg := sinkConfig(t, brokers, registryURL, "sqlite://"+filepath.Join(t.TempDir(), "read.db"), false)
	dir := filepath.Join(t.TempDir(), "prof")
	if _, err := runCLI(t, "rebuild", "--config", cfg, "--read-model", "nope", "--profile-dir", dir); err == nil {
		t.Fatal("rebuild of an unknown read model passed")
	}
	for _, f := range []string{cpuProfileFile, allocsProfileFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("rebuild --profile-dir: %v", err)
		}
	}
	if err := newSinkCommand(io.Discard).Flags().Parse([]string{"--profile-dir", dir}); err == nil {
		t.Error("the bare sink command took --profile-dir: the test no longer shows that withProfile adds it")
	}
}
