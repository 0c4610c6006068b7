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
func TestSinkTablesBecomeBinary(t *testing.T) {
	t.Parallel()
	url := mysqlStore().fresh(t)
	db, d, err := openStore(url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
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
	st := &store{db: db, d: d}
	for range 2 { // the second start finds nothing to move
		if err := st.ensureSinkTables(t.Context()); err != nil {
			t.Fatalf("ensureSinkTables: %v", err)
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
