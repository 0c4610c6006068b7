package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/replicator/replicator/config"
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
		{"unknown entity", republishRequest{entities: []string{"order"}}, `no entity named "order" in the configuration (entities: orders, people)`},
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
