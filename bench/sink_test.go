package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestWriteTSV: LOAD DATA's default format, escapes and NULL included.
func TestWriteTSV(t *testing.T) {
	var b bytes.Buffer
	for i, v := range []any{nil, []byte("a\tb\\c\nd"), int64(-7), time.Date(2024, 1, 2, 3, 4, 5, 600000000, time.UTC), "x"} {
		if i > 0 {
			b.WriteByte('\t')
		}
		if err := writeTSV(&b, v); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := b.String(), `\N	a\tb\\c\nd	-7	2024-01-02 03:04:05.6	x`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := writeTSV(&b, struct{}{}); err == nil {
		t.Error("a struct was written")
	}
}

// TestCreateTableSQL: the ceiling's table has the read model's columns,
// types, NOT NULL and key.
func TestCreateTableSQL(t *testing.T) {
	got := createTableSQL("c", []storeColumn{{"id", "bigint", true}, {"tags", "text[]", false}}, quotePG)
	if want := `CREATE TABLE "c" ("id" bigint NOT NULL, "tags" text[], PRIMARY KEY ("id"))`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestChangeLatencies: the warm-up's inserts are left out, its rows'
// updates counted; a change never seen fails.
func TestChangeLatencies(t *testing.T) {
	t0 := time.Unix(100, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	// k = 1: key 10 is the warm-up, key 11 the load's one transaction,
	// which also updated key 10.
	ct := &changeTimes{base: 10,
		insertAt:   []time.Time{{}, ms(0)},
		updateAt:   []time.Time{ms(0), {}},
		insertSeen: []time.Time{ms(-50), ms(7)},
		updateSeen: []time.Time{ms(9), {}},
	}
	lat, err := ct.latencies(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 2 || lat[0] != 9*time.Millisecond || lat[1] != 7*time.Millisecond {
		t.Errorf("got %v, want [9ms 7ms]", lat)
	}
	ct.updateSeen[0] = time.Time{}
	if _, err := ct.latencies(1); err == nil || !strings.Contains(err.Error(), "update of key 10 never seen") {
		t.Errorf("got %v, want the unseen update named", err)
	}
}
