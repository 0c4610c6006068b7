package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/source"
)

func TestRepublishArguments(t *testing.T) {
	cfg := &config.Config{Entities: []config.Entity{
		{Name: "orders", Table: "orders"},
		{Name: "people", Table: `crm."People"`},
	}}
	for _, tc := range []struct {
		name string
		req  republishRequest
		want string
	}{
		{"nothing", republishRequest{}, "give --entity NAME (repeatable), --all or --cancel"},
		{"entity and all", republishRequest{entities: []string{"orders"}, all: true}, "give --entity NAME (repeatable), --all or --cancel"},
		{"id without cancel", republishRequest{all: true, id: "x"}, "--id goes with --cancel"},
		{"reconcile with cancel", republishRequest{cancel: true, opts: source.RepublishOptions{Reconcile: true}}, "--reconcile goes with --entity or --all, not --cancel"},
		{"rate with cancel", republishRequest{cancel: true, id: "x", opts: source.RepublishOptions{Rate: 100}}, "--rate goes with --entity or --all, not --cancel"},
		{"chunk rows with cancel", republishRequest{cancel: true, opts: source.RepublishOptions{ChunkRows: 10}}, "--chunk-rows goes with --entity or --all, not --cancel"},
		{"unknown entity", republishRequest{entities: []string{"order"}}, `no entity named "order" in the configuration (entities: orders, people)`},
		{"chunk rows over the bound", republishRequest{all: true, opts: source.RepublishOptions{ChunkRows: 100_001}},
			"--chunk-rows 100001: must be between 1 and 100000 (a chunk's rows are held in memory, 3 chunks at a time), or 0 for chunks of about 8 MB"},
		{"negative chunk rows", republishRequest{all: true, opts: source.RepublishOptions{ChunkRows: -1}}, "--chunk-rows -1: must be between 1 and 100000"},
		{"negative rate", republishRequest{all: true, opts: source.RepublishOptions{Rate: -1}}, "--rate -1: must not be negative"},
	} {
		err := runRepublish(context.Background(), cfg, tc.req, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}

	got, err := republishTables(cfg, []string{"people", "orders", "people"}, false)
	if err != nil || !slices.Equal(got, []string{"crm.People", "public.orders"}) {
		t.Errorf("--entity people --entity orders --entity people: got %v, %v; want [crm.People public.orders]", got, err)
	}
	got, err = republishTables(cfg, nil, true)
	if err != nil || !slices.Equal(got, []string{"public.orders", "crm.People"}) {
		t.Errorf("--all: got %v, %v; want [public.orders crm.People]", got, err)
	}
}

// status shows each table of a republish in progress.
func TestStatusShowsRepublish(t *testing.T) {
	rep := statusReport{Slot: &slotReport{Name: "s"}, Snapshot: &snapshotReport{Complete: true, Republish: []republishReport{{ID: "r1", Tables: []republishTableReport{
		{Table: "public.a", Chunks: 3, Rows: 15000, Done: true},
		{Table: "public.b", Chunks: 1, Rows: 5000},
	}}}}}
	var b strings.Builder
	if err := printStatus(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"r1", "public.a: 15000 rows, done", "public.b: 5000 rows in 1 chunks so far"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}
