package sink

import (
	"database/sql"
	"strings"
	"testing"
)

// TestSinkTablesBecomeBinary: MySQL sink tables made before their name
// columns compared as bytes (in the database's case-insensitive default)
// are moved to utf8mb4_bin at the next start, their rows kept; two read
// models whose names differ only in case then keep offsets of their own.
// A table held by another transaction is a warning, not a stalled start.
func TestSinkTablesBecomeBinary(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, mysqlStore().fresh(t))
	db := st.db
	// The tables as the versions before made them.
	for _, q := range []string{
		`CREATE TABLE replicator_sink_offsets (read_model varchar(200) NOT NULL, topic varchar(249) NOT NULL, part INTEGER NOT NULL,
			next_offset BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (read_model, topic, part))`,
		`CREATE TABLE replicator_sink_side (read_model varchar(200) NOT NULL, topic varchar(249) NOT NULL, topic_key varchar(64) NOT NULL,
			row_key varchar(64) NOT NULL, seq BIGINT NOT NULL, key_bytes longblob, value_bytes longblob NOT NULL,
			PRIMARY KEY (read_model, topic, topic_key))`,
		`INSERT INTO replicator_sink_offsets VALUES ('Profile', 'customers', 0, 7, 1)`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := st.ensureSinkTables(t.Context()); err != nil {
		t.Fatalf("ensureSinkTables: %v", err)
	}
	// A batch of another read model holding the table: the ALTER would
	// queue every statement on it behind its wait. It gives up after a
	// few seconds with a warning naming what to run, and the start goes on.
	holder, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(t.Context(), `SELECT * FROM replicator_sink_offsets`); err != nil {
		t.Fatal(err)
	}
	warnings := st.binaryNames(t.Context())
	if len(warnings) != 1 || !strings.Contains(warnings[0], "run: ALTER TABLE `replicator_sink_offsets` MODIFY `read_model` varchar(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, MODIFY `topic`") {
		t.Errorf("binaryNames while a transaction holds the offsets table: warnings %q, want one naming the statements to run", warnings)
	}
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second start finds nothing to move
		if warnings := st.binaryNames(t.Context()); len(warnings) > 0 {
			t.Fatalf("binaryNames, start %d: %q", i+1, warnings)
		}
	}
	rows, err := db.QueryContext(t.Context(), `SELECT table_name, column_name, collation_name FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name LIKE 'replicator_sink_%' AND data_type = 'varchar' ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var table, col string
		var coll sql.NullString
		if err := rows.Scan(&table, &col, &coll); err != nil {
			t.Fatal(err)
		}
		got = append(got, table+"."+col+" "+coll.String)
	}
	want := []string{
		"replicator_sink_failures.read_model utf8mb4_bin",
		"replicator_sink_offsets.read_model utf8mb4_bin", "replicator_sink_offsets.topic utf8mb4_bin",
		"replicator_sink_side.read_model utf8mb4_bin", "replicator_sink_side.row_key utf8mb4_bin",
		"replicator_sink_side.topic utf8mb4_bin", "replicator_sink_side.topic_key utf8mb4_bin",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("collations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := db.ExecContext(t.Context(), `INSERT INTO replicator_sink_offsets VALUES ('profile', 'customers', 0, 3, 1)`); err != nil {
		t.Fatalf("a second read model whose name differs only in case: %v", err)
	}
	var next int64
	if err := db.QueryRowContext(t.Context(), `SELECT next_offset FROM replicator_sink_offsets WHERE read_model = 'Profile'`).Scan(&next); err != nil || next != 7 {
		t.Errorf("the stored offset of Profile: %d, %v; want 7 kept", next, err)
	}
}
