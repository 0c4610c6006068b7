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
					if amount, err = d.value(dec, big.NewRat(int64(i)*100+5, 100)); err != nil {
						t.Fatal(err)
					}
					if seen, err = d.value(ts, base.Add(time.Duration(i)*time.Second)); err != nil {
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
