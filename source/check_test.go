package source

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// wantProblems checks that problems are exactly one per wanted substring.
func wantProblems(t *testing.T, problems []error, want ...string) {
	t.Helper()
	var got []string
	for _, p := range problems {
		got = append(got, p.Error())
	}
	if len(got) != len(want) {
		t.Errorf("problems: got %d %q, want %d containing %q", len(got), got, len(want), want)
		return
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, w)
		}
		if !found {
			t.Errorf("problems: got %q, want one containing %q", got, w)
		}
	}
}

func testCheckServer(t *testing.T, pg *pgcluster.Cluster) {
	db := newDB(t, pg, "checks", `
		CREATE TABLE t (id int PRIMARY KEY);
		CREATE PUBLICATION existing FOR TABLE t;
		CREATE ROLE norepl LOGIN;
		CREATE ROLE repl LOGIN REPLICATION;
		GRANT SELECT ON t TO repl;
	`)
	db.exec(`SELECT pg_create_logical_replication_slot('checks_other', 'test_decoding')`)
	tests := []struct {
		name, user, slot, pub string
		want                  []string
	}{
		{name: "superuser on a logical cluster", user: "postgres", slot: "checks_new", pub: "new"},
		{name: "least privilege with an existing publication", user: "repl", slot: "checks_new", pub: "existing"},
		{
			name: "role without REPLICATION is named", user: "norepl", slot: "checks_new", pub: "new",
			want: []string{
				`role norepl lacks the REPLICATION attribute: ALTER ROLE "norepl" REPLICATION`,
			},
		},
		{
			name: "slot with another plugin", user: "postgres", slot: "checks_other", pub: "existing",
			want: []string{"replication slot checks_other exists with plugin test_decoding, not pgoutput: choose another source.slot"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := Connect(context.Background(), dsnAs(t, db.dsn, tt.user))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			wantProblems(t, CheckServer(context.Background(), conn, tt.slot, tt.pub), tt.want...)
		})
	}

	t.Run("CheckTable", func(t *testing.T) {
		t.Parallel()
		tbl := relation.Table{Schema: "public", Name: "t"}
		for user, want := range map[string][]string{
			"repl":   nil,
			"norepl": {`table "public"."t": role norepl lacks SELECT: GRANT SELECT ON "public"."t" TO "norepl"`},
		} {
			conn, err := Connect(context.Background(), dsnAs(t, db.dsn, user))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			wantProblems(t, CheckTable(context.Background(), conn, &tbl), want...)
		}
	})

	t.Run("Run refuses a slot with another plugin", func(t *testing.T) {
		t.Parallel()
		db := db.in(t)
		src := db.newSource(t.TempDir(), nil, func(c *Config) { c.Slot = "checks_other"; c.Publication = "existing" }, "t")
		err := run(t, src, newFakeHandler(false)).wait(t)
		want := "replication slot checks_other uses plugin test_decoding, not pgoutput"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run: got %v, want an error containing %q", err, want)
		}
		var plugin string
		if err := db.conn.QueryRow(context.Background(), `SELECT plugin FROM pg_replication_slots WHERE slot_name = 'checks_other'`).Scan(&plugin); err != nil || plugin != "test_decoding" {
			t.Errorf("slot checks_other after Run: got plugin %q (%v), want test_decoding (left alone)", plugin, err)
		}
	})
}

// TestCheckServerLimits runs CheckServer on a cluster that cannot serve
// logical replication at all: wal_level=replica and no free slot.
func TestCheckServerLimits(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Setting("wal_level", "replica"), pgtest.Setting("max_replication_slots", "1"))
	if err := pg.Exec(context.Background(), `SELECT pg_create_physical_replication_slot('taken')`); err != nil {
		t.Fatal(err)
	}
	conn, err := Connect(context.Background(), pg.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	wantProblems(t, CheckServer(context.Background(), conn, "s", "p"),
		fmt.Sprintf("wal_level is %q, logical decoding needs 'logical': ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL", "replica"),
		"all 1 replication slots are in use: raise max_replication_slots (restart needed) or drop an unused slot")
}
