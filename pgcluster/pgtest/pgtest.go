// Package pgtest starts throwaway PostgreSQL clusters ([pgcluster.Cluster])
// for tests and ties their lifetime to the test.
//
// A machine without PostgreSQL server binaries fails the test with a message
// saying what to install: tests that need PostgreSQL never skip.
package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/replicator/replicator/pgcluster"
)

// startTimeout bounds initdb plus the first start; a loaded CI machine takes
// a few seconds.
const startTimeout = 2 * time.Minute

// Start starts a cluster with the [pgcluster.Options] defaults (logical
// replication on a free port), changed by opts in order, and closes it
// (immediate stop, directory removed) when the test and its subtests end.
// If the test failed, the end of the server log is logged first.
// Any error, including missing PostgreSQL binaries, fails the test.
func Start(t testing.TB, opts ...func(*pgcluster.Options)) *pgcluster.Cluster {
	t.Helper()
	var o pgcluster.Options
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := pgcluster.Start(ctx, o)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	// Cleanups run last-in first-out: the log is read before Close removes it.
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close PostgreSQL cluster: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL server log (%s), last lines:\n%s", c.LogPath(), tail(c.LogPath(), 8<<10))
		}
	})
	return c
}

// Setting returns an option that sets one postgresql.conf parameter, for
// example pgtest.Setting("max_replication_slots", "2").
func Setting(name, value string) func(*pgcluster.Options) {
	return func(o *pgcluster.Options) {
		if o.Settings == nil {
			o.Settings = make(map[string]string)
		}
		o.Settings[name] = value
	}
}

// Connect opens a connection to dsn and closes it when the test ends.
// A connection error fails the test.
func Connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx) // the server may be gone already (Kill, Stop)
	})
	return conn
}

// tail returns up to the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(0, fi.Size()-n)
	b := make([]byte, fi.Size()-off)
	m, _ := f.ReadAt(b, off)
	return string(b[:m])
}
