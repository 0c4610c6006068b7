package sink

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestSQLiteNaNIsPoisonNotNull: SQLite turns a NaN bound as a REAL into
// NULL without an error, so a double NaN is refused as a poison record
// rather than stored as a NULL the source never had.
func TestSQLiteNaNIsPoisonNotNull(t *testing.T) {
	t.Parallel()
	store := sqliteStore().fresh(t)
	e := newEnv(t)
	value := `{"type":"record","name":"readings","fields":[{"name":"id","type":"long"},{"name":"v","type":["null","double"],"default":null}]}`
	key := `{"type":"record","name":"readings_key","fields":[{"name":"id","type":"long"}]}`
	w := e.topic("readings", key, value)
	w.put(map[string]any{"id": int64(1)}, map[string]any{"id": int64(1), "v": 0.5})
	w.put(map[string]any{"id": int64(2)}, map[string]any{"id": int64(2), "v": math.NaN()})
	r := e.start(ReadModel{Name: "readings", Table: "readings", Key: []string{"id"}, Sources: []Source{
		{Topic: "readings", Key: []string{"id"}, Owner: true, Columns: []Column{{Name: "v", Field: "v"}}},
	}}, store)
	err := waitStopped(t, r)
	var pe *PoisonError
	if !errors.As(err, &pe) || pe.Offset != 1 || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("Run: got %v, want a PoisonError at readings offset 1 naming NaN", err)
	}
	wantRows(t, store, "readings", []string{"id", "v"}, "1|0.5")
}
