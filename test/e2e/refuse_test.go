//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

// A row holding a value its Avro type cannot carry stops the replicator
// with a message naming the table, the key and the column; the row is
// never skipped (a restart meets it again) and the slot keeps it; listing
// the column in as_string: carries it as PostgreSQL's text.
func TestRefusedValueStopsTheReplicator(t *testing.T) {
	pg := pgtest.Start(t)
	admin := connect(t, pg)

	t.Run("infinite timestamp in the snapshot", func(t *testing.T) {
		conn := newDatabase(t, pg, admin, "refused_snapshot")
		mustExec(t, conn, `CREATE TABLE refused (id bigint PRIMARY KEY, note text, valid_until timestamp);
			INSERT INTO refused VALUES (1, 'ok', '2024-01-01'), (2, 'forever', 'infinity'), (3, 'ok', '1960-05-06 07:08:09')`)
		env := newEnv(t)
		entity := "  - table: refused\n    topic: refused\n"
		env.writeConfig(t, pg.DSN("refused_snapshot"), "refused_snapshot", entity)
		want := []string{`table public.refused key ("id")=(2) column "valid_until" (timestamp without time zone)`, "infinity", "as_string:"}
		for attempt := 1; attempt <= 2; attempt++ { // the second start meets the row again
			p := startReplicator(t, "run", "--config", env.cfgPath)
			if err := p.waitExit(t, 90*time.Second); err == nil {
				t.Fatalf("start %d: replicator exited cleanly, want a failure on key 2; output:\n%s", attempt, p.output.String())
			}
			assertOutput(t, p, want)
		}

		// The documented way out: the column as text, on a new topic (the
		// field changes type).
		env.writeConfig(t, pg.DSN("refused_snapshot"), "refused_snapshot", "  - table: refused\n    topic: refused.text\n    as_string: [valid_until]\n")
		p := startReplicator(t, "run", "--config", env.cfgPath)
		waitOutput(t, p, "msg=streaming")
		waitCaughtUp(t, conn, env.slot, p)
		// The embedded broker kept the old topic: the refused row is not on it.
		for _, r := range readTopicGoavro(t, env.brokerAddr, env.registryURL(), "refused") {
			if id, _ := gotInt(r.Key["id"]); id != "1" {
				t.Errorf("topic refused: got key %s (%v), want only key 1 before the refused row", id, r.Value)
			}
		}
		got := map[string]string{}
		for _, r := range latestByKey(readTopicGoavro(t, env.brokerAddr, env.registryURL(), "refused.text")) {
			id, _ := gotInt(r.Key["id"])
			got[id], _ = gotString(unwrapUnion(r.Value["valid_until"]))
		}
		wantText := map[string]string{"1": "2024-01-01 00:00:00", "2": "infinity", "3": "1960-05-06 07:08:09"}
		for id, w := range wantText {
			if got[id] != w {
				t.Errorf("refused.text key %s: got valid_until %q, want %q", id, got[id], w)
			}
		}
		p.stop(t)
	})

	streamCases := []struct {
		name, db, typ, good, bad, after string
		want                            []string
		wantText                        map[string]string // after the fix, by key
	}{
		{
			name: "NaN in a numeric(p,s) in the stream", db: "refused_nan", typ: "numeric(10,2)",
			good: "1.50", bad: "NaN", after: "2.00",
			want:     []string{"public.priced key 2", `column "price"`, "NaN cannot be represented as an Avro decimal", "as_string:"},
			wantText: map[string]string{"2": "NaN", "3": "2.00"},
		},
		{
			name: "-infinity in a date array in the stream", db: "refused_inf", typ: "date[]",
			good: "{2024-01-01}", bad: "{1969-12-31,NULL,-infinity}", after: "{0001-01-01 BC}",
			want:     []string{"insert at LSN ", `table public.priced key ("id")=(2) column "price" (date[])`, `element 3`, "-infinity", "as_string:"},
			wantText: map[string]string{"2": "{1969-12-31,NULL,-infinity}", "3": "{\"0001-01-01 BC\"}"},
		},
	}
	for _, tc := range streamCases {
		t.Run(tc.name, func(t *testing.T) {
			conn := newDatabase(t, pg, admin, tc.db)
			mustExec(t, conn, `CREATE TABLE priced (id bigint PRIMARY KEY, price `+tc.typ+`)`)
			env := newEnv(t)
			env.writeConfig(t, pg.DSN(tc.db), tc.db, "  - table: priced\n    topic: priced\n")
			p := startReplicator(t, "run", "--config", env.cfgPath)
			waitOutput(t, p, "msg=streaming")
			mustExec(t, conn, `INSERT INTO priced VALUES (1, $1)`, tc.good)
			waitCaughtUp(t, conn, env.slot, p)
			var xid string
			tx, err := conn.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(context.Background(), `INSERT INTO priced VALUES (2, $1)`, tc.bad); err != nil {
				t.Fatal(err)
			}
			if err := tx.QueryRow(context.Background(), `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			mustExec(t, conn, `INSERT INTO priced VALUES (3, $1)`, tc.after)

			for attempt := 1; attempt <= 2; attempt++ {
				if attempt == 2 {
					p = startReplicator(t, "run", "--config", env.cfgPath)
				}
				if err := p.waitExit(t, 90*time.Second); err == nil {
					t.Fatalf("start %d: replicator exited cleanly, want a failure on key 2; output:\n%s", attempt, p.output.String())
				}
				assertOutput(t, p, tc.want)
				// The slot still holds the refused transaction: the LSN was not
				// confirmed past it.
				waitSlotReleased(t, conn, env.slot)
				var pending int
				err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($2::name, NULL, NULL,
					'proto_version', '1', 'publication_names', $2::text) WHERE xid::text = $1`, xid, env.slot).Scan(&pending)
				if err != nil {
					t.Fatalf("peek the slot: %v", err)
				}
				if pending == 0 {
					t.Errorf("start %d: the slot no longer holds transaction %s: its LSN was confirmed although its row was refused", attempt, xid)
				}
			}

			env.writeConfig(t, pg.DSN(tc.db), tc.db, "  - table: priced\n    topic: priced.text\n    as_string: [price]\n")
			p = startReplicator(t, "run", "--config", env.cfgPath)
			waitCaughtUp(t, conn, env.slot, p)
			var keys []string
			for _, r := range readTopicGoavro(t, env.brokerAddr, env.registryURL(), "priced") {
				id, _ := gotInt(r.Key["id"])
				keys = append(keys, id)
			}
			if strings.Join(keys, ",") != "1" {
				t.Errorf("topic priced: got keys %v, want only 1 (2 refused, 3 after it)", keys)
			}
			got := map[string]string{}
			for _, r := range latestByKey(readTopicGoavro(t, env.brokerAddr, env.registryURL(), "priced.text")) {
				id, _ := gotInt(r.Key["id"])
				got[id], _ = gotString(unwrapUnion(r.Value["price"]))
			}
			for id, w := range tc.wantText {
				if got[id] != w {
					t.Errorf("priced.text after the fix, key %s: got %q, want %q (nothing after the refused row lost)", id, got[id], w)
				}
			}
			p.stop(t)
		})
	}
}

// newDatabase creates a database and connects to it (session in UTC).
func newDatabase(t *testing.T, pg *pgcluster.Cluster, admin *pgx.Conn, name string) *pgx.Conn {
	t.Helper()
	mustExec(t, admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	cfg, err := pgx.ParseConfig(pg.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["TimeZone"] = "UTC"
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func assertOutput(t *testing.T, p *process, want []string) {
	t.Helper()
	out := p.output.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q; output:\n%s", w, out)
		}
	}
}
