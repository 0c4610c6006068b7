//go:build e2e

package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

// toastDDL makes two tables whose body (text) and doc (jsonb) hold about
// 100 KB of md5 hex digits each: too large to stay in line, and not
// compressible enough for pglz, so PostgreSQL stores them out of line and
// pgoutput leaves them out of an UPDATE that does not touch them.
const toastDDL = `
CREATE TABLE docs (id bigint PRIMARY KEY, n int NOT NULL, body text, doc jsonb);
CREATE TABLE docs_full (id bigint PRIMARY KEY, n int NOT NULL, body text, doc jsonb);
ALTER TABLE docs_full REPLICA IDENTITY FULL;`

// bigValues is the SQL for a fresh ~100 KB body and doc, different per row
// (correlated to the id column of the enclosing query) and per call.
const bigValues = `(SELECT string_agg(md5(id::text || g::text || random()::text), '') FROM generate_series(1, 3200) g),
	(SELECT jsonb_build_object('blob', string_agg(md5(g::text || id::text || random()::text), ''), 'nested', jsonb_build_object('k', id, 'a', jsonb_build_array(1, 'x', NULL)))
	 FROM generate_series(1, 3200) g)`

// TestUnchangedTOAST: an UPDATE that leaves large values untouched still
// produces records holding them in full, under the default replica
// identity (re-read) and FULL (old tuple), and rows that are gone by the
// time the replicator reads the update converge to a tombstone.
func TestUnchangedTOAST(t *testing.T) {
	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, toastDDL)
	tables := []string{"docs", "docs_full"}
	for _, tbl := range tables {
		mustExec(t, conn, fmt.Sprintf(`INSERT INTO %s (id, n, body, doc) SELECT id, 0, %s FROM generate_series(1, 6) id`, tbl, bigValues))
		mustExec(t, conn, fmt.Sprintf(`INSERT INTO %s (id, n, body, doc) SELECT id, 0, %s FROM generate_series(8, 12) id`, tbl, bigValues))
		var toastBytes int64
		if err := conn.QueryRow(context.Background(), `SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = $1::regclass`, tbl).Scan(&toastBytes); err != nil {
			t.Fatal(err)
		}
		if toastBytes < 6*2*90_000 {
			t.Fatalf("precondition: the TOAST table of %s holds %d bytes, want the 12 large values out of line", tbl, toastBytes)
		}
	}
	// Every (n, body, doc) state a row has had, by table and key: a
	// record must hold one of them, never a mix.
	states := map[string]map[string]map[rowState]bool{}
	record := func() {
		t.Helper()
		for _, tbl := range tables {
			for id, s := range readStates(t, conn, tbl) {
				if states[tbl] == nil {
					states[tbl] = map[string]map[rowState]bool{}
				}
				if states[tbl][id] == nil {
					states[tbl][id] = map[rowState]bool{}
				}
				states[tbl][id][s] = true
			}
		}
	}
	record()

	env := newEnv(t)
	env.writeConfig(t, pg.DSN("postgres"), "replicator", "  - table: docs\n    topic: docs\n  - table: docs_full\n    topic: docs.full\n")
	p := startReplicator(t, "run", "--config", env.cfgPath)
	waitOutput(t, p, "msg=streaming")
	for _, tbl := range tables {
		// Only n changes: body and doc are unchanged TOAST values.
		mustExec(t, conn, `UPDATE `+tbl+` SET n = n + 1 WHERE id = 1`)
		record()
		// Updated, then deleted in the same transaction: the update's
		// state (n = 10) is never visible outside it, but it is exact.
		s := readStates(t, conn, tbl)["2"]
		s.n = "10"
		states[tbl]["2"][s] = true
		mustExec(t, conn, `BEGIN; UPDATE `+tbl+` SET n = 10 WHERE id = 2; DELETE FROM `+tbl+` WHERE id = 2; COMMIT`)
		mustExec(t, conn, fmt.Sprintf(`INSERT INTO %s (id, n, body, doc) SELECT id, 0, %s FROM generate_series(7, 7) id`, tbl, bigValues))
		record()
		mustExec(t, conn, `UPDATE `+tbl+` SET n = 7 WHERE id = 7`)
		record()
	}
	waitCaughtUp(t, conn, "replicator", p)
	p.stop(t)

	// While the replicator is stopped: updates of rows that later
	// transactions delete, move away, or change again. The re-read of the
	// default-identity table finds them gone or newer.
	for _, tbl := range tables {
		for _, sql := range []string{
			`UPDATE ` + tbl + ` SET n = 20 WHERE id = 3`,
			`DELETE FROM ` + tbl + ` WHERE id = 3`,
			`UPDATE ` + tbl + ` SET id = 40, n = 1 WHERE id = 4`,
			`DELETE FROM ` + tbl + ` WHERE id = 40`,
			`UPDATE ` + tbl + ` SET n = 5 WHERE id = 5`,
			fmt.Sprintf(`UPDATE %[1]s SET (body, doc) = (SELECT %[2]s FROM %[1]s s WHERE s.id = %[1]s.id), n = 6 WHERE id = 5`, tbl, bigValues),
			`UPDATE ` + tbl + ` SET id = 60, n = 1 WHERE id = 6`,
			// One transaction's updates re-read together, then one of
			// its rows updated again, one deleted, one moved to another
			// key by later transactions: 11 and 12 are read as the
			// transaction left them, the others found newer or gone.
			`UPDATE ` + tbl + ` SET n = n + 100 WHERE id BETWEEN 8 AND 12`,
			`UPDATE ` + tbl + ` SET n = 30 WHERE id = 8`,
			`DELETE FROM ` + tbl + ` WHERE id = 9`,
			`UPDATE ` + tbl + ` SET id = 110, n = 2 WHERE id = 10`,
		} {
			mustExec(t, conn, sql)
			record()
		}
	}
	p = startReplicator(t, "run", "--config", env.cfgPath)
	waitCaughtUp(t, conn, "replicator", p)

	for i, topic := range []string{"docs", "docs.full"} {
		tbl := tables[i]
		records := readTopicGoavro(t, env.brokerAddr, env.registryURL(), topic)
		for _, r := range records {
			id, _ := gotInt(r.Key["id"])
			if r.Value == nil {
				continue
			}
			s, err := recordState(r.Value)
			if err != nil {
				t.Errorf("%s key %s (op %s): %v", topic, id, r.Headers[cdc.HeaderOp], err)
				continue
			}
			if !states[tbl][id][s] {
				t.Errorf("%s key %s (op %s): got n=%s body %s doc %s, a state the row never had (a placeholder, a null or a mix of two states)", topic, id, r.Headers[cdc.HeaderOp], s.n, s.body, s.doc)
			}
		}
		latest := map[string]topicRecord{}
		for _, r := range latestByKey(records) {
			id, _ := gotInt(r.Key["id"])
			latest[id] = r
		}
		table := readStates(t, conn, tbl)
		for id, want := range table {
			r, ok := latest[id]
			if !ok || r.Value == nil {
				t.Errorf("%s key %s: in the table, got no record or a tombstone last on the topic", topic, id)
				continue
			}
			if got, err := recordState(r.Value); err != nil || got != want {
				t.Errorf("%s key %s: latest record n=%s body %s doc %s (%v), want the table's n=%s body %s doc %s", topic, id, got.n, got.body, got.doc, err, want.n, want.body, want.doc)
			}
		}
		for _, id := range []string{"2", "3", "4", "40", "6", "9", "10"} {
			if r, ok := latest[id]; !ok {
				t.Errorf("%s key %s: deleted or moved away, never on the topic, want a tombstone last", topic, id)
			} else if r.Value != nil {
				t.Errorf("%s key %s: deleted or moved away, got a record (op %s, LSN %s) last, want a tombstone", topic, id, r.Headers[cdc.HeaderOp], r.Headers[cdc.HeaderLSN])
			}
		}
	}
	p.stop(t)
}

// rowState is a row's n and the md5 of its large values.
type rowState struct{ n, body, doc string }

func readStates(t *testing.T, conn *pgx.Conn, table string) map[string]rowState {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id::text, n::text, md5(body), md5(doc::text) FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]rowState{}
	for rows.Next() {
		var id string
		var s rowState
		if err := rows.Scan(&id, &s.n, &s.body, &s.doc); err != nil {
			t.Fatal(err)
		}
		out[id] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// recordState is the rowState of a decoded value; a missing, null or short
// large value is an error.
func recordState(v map[string]any) (rowState, error) {
	n, err := gotInt(v["n"])
	if err != nil {
		return rowState{}, fmt.Errorf("n: %w", err)
	}
	s := rowState{n: n}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"body", &s.body}, {"doc", &s.doc}} {
		x, err := gotString(unwrapUnion(v[f.name]))
		if err != nil {
			return s, fmt.Errorf("%s: %w", f.name, err)
		}
		if len(x) < 100_000 {
			return s, fmt.Errorf("%s holds %d bytes, want the full ~100 KB value", f.name, len(x))
		}
		sum := md5.Sum([]byte(x))
		*f.dst = hex.EncodeToString(sum[:])
	}
	return s, nil
}
