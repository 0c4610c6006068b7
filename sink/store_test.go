package sink

import (
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestUpdateRowsBatch checks the batched non-owner update on every store:
// composite keys, typed values (decimal, timestamp, null), more rows than
// one statement takes, and keys without a row left absent (an update never
// inserts).
func TestUpdateRowsBatch(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), postgresStore(t), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			db, d, err := openStore(sk.fresh(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			st := &store{db: db, d: d}
			ctx := t.Context()
			dec := fieldType{kind: kindDecimal, precision: 12, scale: 2}
			ts := fieldType{kind: kindTimestamp}
			q := d.quote
			create := fmt.Sprintf("CREATE TABLE %s (%s %s NOT NULL, %s %s NOT NULL, %s %s NOT NULL, %s %s, %s %s, PRIMARY KEY (%s, %s))",
				q("up d"), q("region"), d.sqlType(fieldType{kind: kindString}, true), q("id"), d.sqlType(fieldType{kind: kindLong}, true),
				q("owner col"), d.sqlType(fieldType{kind: kindString}, false),
				q("amount"), d.sqlType(dec, false), q("seen"), d.sqlType(ts, false), q("region"), q("id"))
			if _, err := db.ExecContext(ctx, create); err != nil {
				t.Fatalf("create: %v", err)
			}
			// 700 existing rows in two regions; updates for them plus 300
			// keys without a row.
			const existing, absent = 700, 300
			var ins [][]any
			for i := 0; i < existing; i++ {
				ins = append(ins, []any{[]string{"eu", "us"}[i%2], int64(i), fmt.Sprintf("o%d", i), nil, nil})
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.upsertRows(ctx, tx, "up d", []string{"region", "id", "owner col", "amount", "seen"}, 2, ins); err != nil {
				t.Fatalf("insert: %v", err)
			}
			base := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
			var ups [][]any
			for i := 0; i < existing+absent; i++ {
				var amount, seen any
				if i%3 != 0 { // every third row's columns are cleared
					if amount, err = d.value(dec, "", big.NewRat(int64(i)*100+5, 100)); err != nil {
						t.Fatal(err)
					}
					if seen, err = d.value(ts, "", base.Add(time.Duration(i)*time.Second)); err != nil {
						t.Fatal(err)
					}
				}
				ups = append(ups, []any{amount, seen, []string{"eu", "us"}[i%2], int64(i)})
			}
			if err := st.updateRows(ctx, tx, "up d", []string{"region", "id"}, []string{"amount", "seen"}, ups); err != nil {
				t.Fatalf("updateRows: %v", err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}

			rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT %s, %s, %s, %s, %s FROM %s ORDER BY %s",
				q("region"), q("id"), q("owner col"), q("amount"), q("seen"), q("up d"), q("id")))
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				var region, owner string
				var id int64
				var amount, seen *string
				var seenT *time.Time
				var dst []any
				switch d.(type) {
				case sqliteDialect:
					dst = []any{&region, &id, &owner, &amount, &seen}
				default:
					dst = []any{&region, &id, &owner, &amount, &seenT}
				}
				if err := rows.Scan(dst...); err != nil {
					t.Fatal(err)
				}
				i := int(id)
				if i >= existing {
					t.Fatalf("row %d was inserted by an update", i)
				}
				if want := []string{"eu", "us"}[i%2]; region != want || owner != fmt.Sprintf("o%d", i) {
					t.Fatalf("row %d: key or owner column changed: %s %s", i, region, owner)
				}
				if seenT != nil {
					s := seenT.UTC().Format("2006-01-02T15:04:05.000000Z")
					seen = &s
				}
				if i%3 == 0 {
					if amount != nil || seen != nil {
						t.Fatalf("row %d: want cleared columns, got %v %v", i, deref(amount), deref(seen))
					}
				} else {
					wantAmount := big.NewRat(int64(i)*100+5, 100).FloatString(2)
					wantSeen := base.Add(time.Duration(i) * time.Second).Format("2006-01-02T15:04:05.000000Z")
					if amount == nil || *amount != wantAmount || seen == nil || !strings.HasPrefix(*seen, wantSeen[:19]) || !strings.Contains(*seen, ".123456") {
						t.Fatalf("row %d: got amount %s seen %s, want %s %s", i, deref(amount), deref(seen), wantAmount, wantSeen)
					}
				}
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if n != existing {
				t.Fatalf("%d rows, want %d", n, existing)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

// TestTypesUnnest writes every non-array type through PostgreSQL's unnest
// upsert (TestTypes has array columns, which take the multi-row INSERT),
// and a second record over the first (the conflict update).
func TestTypesUnnest(t *testing.T) {
	t.Parallel()
	value := `{"type":"record","name":"typed","fields":[
		{"name":"id","type":"long"},
		{"name":"i","type":"int"},
		{"name":"f","type":"float"},
		{"name":"d","type":"double"},
		{"name":"b","type":"boolean"},
		{"name":"s","type":["null","string"],"default":null},
		{"name":"raw","type":"bytes"},
		{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
		{"name":"u","type":{"type":"string","logicalType":"uuid"}},
		{"name":"day","type":{"type":"int","logicalType":"date"}},
		{"name":"tod","type":{"type":"long","logicalType":"time-micros"}},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"lts","type":{"type":"long","logicalType":"local-timestamp-micros"}}
	]}`
	key := `{"type":"record","name":"typed_key","fields":[{"name":"id","type":"long"}]}`
	cols := []string{"id", "i", "f", "d", "b", "s", "raw", "amount", "u", "day", "tod", "ts", "lts"}
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	rec := func(id int64, s any) map[string]any {
		return map[string]any{
			"id": id, "i": 42, "f": float32(1.5), "d": 2.25, "b": true, "s": s,
			"raw": []byte("bin"), "amount": big.NewRat(-123456, 100), "u": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
			"day": time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "tod": 13*time.Hour + 14*time.Minute + 15*time.Second + 16*time.Microsecond,
			"ts": ts, "lts": ts,
		}
	}
	store := postgresStore(t).fresh(t)
	e := newEnv(t)
	w := e.topic("typed", key, value)
	w.put(map[string]any{"id": int64(1)}, rec(1, "text ü"))
	w.put(map[string]any{"id": int64(2)}, rec(2, nil))
	var mcols []Column
	for _, n := range cols[1:] {
		mcols = append(mcols, Column{Name: n, Field: n})
	}
	r := e.start(ReadModel{Name: "typed", Table: "typed", Key: []string{"id"}, Sources: []Source{{Topic: "typed", Key: []string{"id"}, Owner: true, Columns: mcols}}}, store)
	r.waitRecords(t, 2)
	tail := `|42|1.5|2.25|true|%s|bin|-1234.56|6ba7b810-9dad-11d1-80b4-00c04fd430c8|2024-02-29T00:00:00Z|13:14:15.000016|2024-05-06T07:08:09.123456Z|2024-05-06T07:08:09.123456Z`
	wantRows(t, store, "typed", cols, "1"+fmt.Sprintf(tail, "text ü"), "2"+fmt.Sprintf(tail, "NULL"))
	w.put(map[string]any{"id": int64(2)}, rec(2, "now set"))
	r.waitRecords(t, 3)
	wantRows(t, store, "typed", cols, "1"+fmt.Sprintf(tail, "text ü"), "2"+fmt.Sprintf(tail, "now set"))
}
