package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/replicator/replicator/source"
)

// sourcedrop refuses an incomplete or unusable command line before it
// connects anywhere, naming what is wrong.
func TestRunRefusesBadFlags(t *testing.T) {
	t.Parallel()
	full := []string{"-slot", "s", "-publication", "p", "-state-dir", t.TempDir(), "-tables", "public.t"}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{full, "-url, -slot, -publication, -state-dir and -tables are required"},
		{append([]string{"-url", "host=127.0.0.1 port=1"}, full...), "want a postgres:// URL"},
		{[]string{"-url", "postgres://127.0.0.1:1/x"}, "are required"},
	} {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// The handler keeps nothing but the count, and never blocks or fails.
func TestDropHandlerCounts(t *testing.T) {
	t.Parallel()
	var h dropHandler
	for range 3 {
		if err := h.Handle(context.Background(), &source.Change{Op: source.OpInsert}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.rows.Load(); got != 3 {
		t.Errorf("counted %d changes, want 3", got)
	}
}
