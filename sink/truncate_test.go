package sink

import (
	"errors"
	"testing"
)

// A value longer than its PostgreSQL column's VARCHAR(n) is a poison
// record, never stored cut short: the bulk upsert casts its parameters to
// the column types, and an explicit cast to varchar(n) truncates silently
// where the INSERT itself refuses.
func TestTooLongValueIsPoisonNotTruncated(t *testing.T) {
	t.Parallel()
	store := postgresStore(t).fresh(t)
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	m := customerModel("profile")
	m.Sources[0].Columns[1].Type = "VARCHAR(3)"
	w.put(cust(1, "ann", nil))
	w.put(cust(2, "bobby", nil))
	r := e.start(m, store)
	err := waitStopped(t, r)
	var pe *PoisonError
	if !errors.As(err, &pe) || pe.Offset != 1 {
		t.Fatalf("Run: got %v, want a PoisonError at customers offset 1 (the value too long)", err)
	}
	wantRows(t, store, "profile", profileCols, "1|ann|NULL")
}
