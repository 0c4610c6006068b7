package sink

import (
	"strings"
	"testing"
)

// A table that stops fitting the read model under a running sink (here a
// column dropped) makes the store refuse every statement: the read model
// stops naming the table, even with on_error: dead_letter, instead of
// dead-lettering every record that follows as if each were poison.
func TestTableFaultStopsEvenWithDeadLetter(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, sk storeKind, store string, e *env, w *topicW) {
		m := customerModel("profile")
		m.OnError, m.DeadLetterTopic = DeadLetter, "profile.dlq"
		w.put(cust(1, "ann", "gold"))
		r := e.start(m, store)
		r.waitRecords(t, 1)
		db, d, err := openStore(store)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(t.Context(), "ALTER TABLE "+d.quote("profile")+" DROP COLUMN "+d.quote("tier")); err != nil {
			t.Fatalf("drop column: %v", err)
		}
		w.put(cust(2, "bob", "silver"))
		w.put(cust(3, "cy", nil))
		err = waitStopped(t, r)
		if err == nil || !strings.Contains(err.Error(), "refuses the batch's statements, whatever the records") || !strings.Contains(err.Error(), "profile") {
			t.Fatalf("Run: got %v, want the table named as refusing every statement", err)
		}
		if got := r.s.Stats(); got.DeadLettered != 0 || got.Records != 1 {
			t.Errorf("stats %+v: want 1 record applied and none dead-lettered", got)
		}
	})
}
