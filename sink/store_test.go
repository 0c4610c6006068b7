package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
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

// TestUpsertCopy: in a batch transaction (begin) PostgreSQL upserts through
// COPY, array columns included: straight into the table while no key is
// there, through a temporary table once one is. Every kind of driver value
// round-trips exactly (NULL array elements, text needing escapes, bytea,
// decimals, both timestamps, infinities), a conflict updates, and a later
// upsert of the same table in the transaction does not see an earlier
// one's rows again.
func TestUpsertCopy(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	st := openTestStore(t, url)
	db := st.db
	ctx := t.Context()
	create := `CREATE TABLE "c t" (id bigint PRIMARY KEY, "the text" text, tags text[], nums bigint[], amount numeric(12,2),
		at timestamptz, local timestamp, day date, raw bytea, f double precision, ok boolean, doc jsonb)`
	if _, err := db.ExecContext(ctx, create); err != nil {
		t.Fatal(err)
	}
	cols := []string{"id", "the text", "tags", "nums", "amount", "at", "local", "day", "raw", "f", "ok", "doc"}
	str := func(s string) *string { return &s }
	num := func(n int64) *int64 { return &n }
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	row := func(id int64, text string) []any {
		return []any{id, text, []*string{str(`a "q" \ b`), nil, str("t\tab")}, []*int64{num(1), nil, num(-3)}, "12.50",
			at, at, at, []byte{0, 1, 0xfe}, math.Inf(-1), true, `{"k": "v\n"}`}
	}
	tx, err := st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.end()
	if err := st.upsertRows(ctx, tx, "c t", cols, 1, [][]any{row(1, "first"), row(2, "line\nbreak\\")}); err != nil {
		t.Fatalf("upsert: %v", err)
	}
	if err := st.upsertRows(ctx, tx, "c t", cols, 1, [][]any{row(1, "updated")}); err != nil {
		t.Fatalf("second upsert in the transaction: %v", err)
	}
	var temps int
	if err := queryRow(ctx, tx, `SELECT count(*) FROM pg_class WHERE relname LIKE 'replicator_copy_%' AND relpersistence = 't'`, &temps); err != nil {
		t.Fatal(err)
	}
	if temps != 1 {
		t.Errorf("temporary tables of the COPY path: got %d, want 1 (the conflicting upsert did not go through COPY into one)", temps)
	}
	if err := st.upsertRows(ctx, tx, "c t", cols, 1, [][]any{row(2, "line\nbreak\\"), row(3, "third")}); err != nil {
		t.Fatalf("third upsert in the transaction: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	got := rows(t, url, "c t", cols...)
	rest := `|{"a \"q\" \\ b",NULL,"t	ab"}|{1,NULL,-3}|12.50|2026-01-02T03:04:05.123456Z|2026-01-02T03:04:05.123456Z|2026-01-02T00:00:00Z|` +
		"\x00\x01\xfe" + `|-Inf|true|{"k": "v\n"}`
	want := []string{"1|updated" + rest, "2|line\nbreak\\" + rest, "3|third" + rest}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got rows\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Times outside years 1 to 9999 (BC dates, year 10000) have no COPY text
// form here (Go prints year -5 as "-005", PostgreSQL wants "0006 BC"): the
// COPY path hands them to the statement forms, which store them exactly,
// instead of failing the batch and poisoning a valid record.
func TestUpsertCopyOutOfRangeYears(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	st := openTestStore(t, url)
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE y (id bigint PRIMARY KEY, at timestamptz, local timestamp, day date)`); err != nil {
		t.Fatal(err)
	}
	times := []time.Time{
		time.Date(-5, 3, 4, 5, 6, 7, 123000, time.UTC), // 6 BC
		time.Date(10000, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	var batch [][]any
	for i, at := range times {
		batch = append(batch, []any{int64(i), at, at, at})
	}
	tx, err := st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.end()
	if err := st.upsertRows(ctx, tx, "y", []string{"id", "at", "local", "day"}, 1, batch); err != nil {
		t.Fatalf("upsert: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for i, at := range times {
		var ok bool
		day := time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
		if err := st.db.QueryRowContext(ctx, `SELECT at = $2::timestamptz AND local = $3::timestamp AND day = $4::date FROM y WHERE id = $1`,
			i, at, at, day).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("row %d (%s): stored another time", i, at)
		}
	}
}

// An Avro float into a double precision column (a type override) is
// stored as the same double whichever upsert writes it: COPY printed it as
// a float32 ("0.1"), the statement forms send float64(0.1f).
func TestUpsertCopyFloat32(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	st := openTestStore(t, url)
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE f (id bigint PRIMARY KEY, v double precision)`); err != nil {
		t.Fatal(err)
	}
	tx, err := st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.end()
	v := float32(0.1)
	if err := st.upsertRows(ctx, tx, "f", []string{"id", "v"}, 1, [][]any{{int64(1), v}}); err != nil {
		t.Fatalf("upsert: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var got float64
	if err := st.db.QueryRowContext(ctx, `SELECT v FROM f WHERE id = 1`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != float64(v) {
		t.Errorf("stored %v, want %v (float64 of the float32)", got, float64(v))
	}
}

// BenchmarkUpsertPostgres compares PostgreSQL's two bulk upserts on a
// table unnest can take (no array column): batches of 10,000 new rows of
// the bench table's shape, each in its own transaction: unnest, COPY
// through the temporary table, and COPY straight into the table (new keys).
// The COPY forms are the ones used (copy.go); the figures are in
// docs/ARCHITECTURE.md.
//
//	go test -run '^$' -bench UpsertPostgres -benchtime 20x ./sink/
func BenchmarkUpsertPostgres(b *testing.B) {
	cl := pgtest.Start(b)
	for _, form := range []string{"unnest", "copy-temp", "copy"} {
		b.Run(form, func(b *testing.B) {
			st := benchStore(b, cl, fmt.Sprintf("bench_%s_%d", form, b.N)) // run once with N=1, then with N
			db := st.db
			if form == "copy-temp" { // never straight into the table
				st.skipDirect = map[string]int{"t": math.MaxInt}
			}
			ctx := b.Context()
			if _, err := db.ExecContext(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, name text, email text, amount numeric(12,2),
				created_at timestamptz, attrs jsonb, quantity integer, active boolean, note text)`); err != nil {
				b.Fatal(err)
			}
			cols := []string{"id", "name", "email", "amount", "created_at", "attrs", "quantity", "active", "note"}
			const batch = 10_000
			at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				rows := make([][]any, batch)
				for j := range rows {
					id := int64(i*batch + j)
					rows[j] = []any{id, fmt.Sprintf("customer %d", id), fmt.Sprintf("customer.%d@example.com", id), "1234.50",
						at.Add(time.Duration(id) * time.Second), `{"plan": "pro", "seats": 7}`, int32(id % 1000), id%2 == 0, "note " + fmt.Sprint(id)}
				}
				b.StartTimer()
				var tx batchTx
				var err error
				if form != "unnest" {
					tx, err = st.begin(ctx)
				} else {
					tx, err = db.BeginTx(ctx, nil)
				}
				if err != nil {
					b.Fatal(err)
				}
				if err := st.upsertRows(ctx, tx, "t", cols, 1, rows); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				st.end()
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// TestHashValuesUnchanged: the integer fast path hashes exactly the text
// encoding/json writes (side tables keep these hashes), and other keys
// still go through encoding/json.
func TestHashValuesUnchanged(t *testing.T) {
	for _, vals := range [][]any{
		{int64(42)}, {int64(-9223372036854775808), int32(7), 0}, {int64(1), "a<b"}, {"x"}, {}, {nil},
	} {
		b, err := json.Marshal(jsonSafe(vals))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got, want := hashValues(vals), hex.EncodeToString(sum[:]); got != want {
			t.Errorf("hashValues(%v) = %s, want %s (the hash of %s)", vals, got, want, b)
		}
	}
	if _, ok := appendIntsJSON(nil, []any{int64(1)}); !ok {
		t.Error("an integer key took the slow path")
	}
}

// TestUpsertCopyStreamed: batches larger than a COPY chunk (64 KiB) are
// encoded as the COPY reads them; a direct COPY that meets a key already
// there in its first chunk (the rest not encoded yet) is redone through
// the temporary table with every row; a value without a COPY text form
// fails the stream and reports it.
func TestUpsertCopyStreamed(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	st := openTestStore(t, url)
	db := st.db
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, `CREATE TABLE s (id bigint PRIMARY KEY, note text)`); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 100)
	batch := func(from, to int, tag string) [][]any {
		var out [][]any
		for id := from; id < to; id++ {
			out = append(out, []any{int64(id), fmt.Sprintf("%s %d %s", tag, id, pad)})
		}
		return out
	}
	for _, b := range []struct {
		rows [][]any
	}{
		{batch(0, 3000, "first")},  // straight into the table, streamed
		{batch(0, 6000, "second")}, // the first key is there: the temporary table, every row
	} {
		tx, err := st.begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.upsertRows(ctx, tx, "s", []string{"id", "note"}, 1, b.rows); err != nil {
			t.Fatalf("upsert: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		st.end()
	}
	var n, second int
	if err := db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE note LIKE 'second %') FROM s`).Scan(&n, &second); err != nil {
		t.Fatal(err)
	}
	if n != 6000 || second != 6000 {
		t.Fatalf("rows: got %d (%d of the second batch), want 6000 (6000)", n, second)
	}

	// The reader on its own: read in small pieces it is the whole text; a
	// value without a text form fails it.
	var buf bytes.Buffer
	c := &copyRows{rows: batch(0, 50, "r"), types: []string{"bigint", "text"}, buf: &buf}
	got, err := io.ReadAll(io.LimitReader(struct{ io.Reader }{c}, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf.Bytes()) || !bytes.HasPrefix(got, []byte("0\tr 0 x")) || bytes.Count(got, []byte("\n")) != 50 {
		t.Fatalf("streamed text: got %d bytes, %d lines", len(got), bytes.Count(got, []byte("\n")))
	}
	bad := &copyRows{rows: append(batch(0, 5, "r"), []any{int64(9), struct{}{}}), types: []string{"bigint", "text"}, buf: new(bytes.Buffer)}
	if _, err := io.ReadAll(bad); !errors.Is(err, errNoCopyText) || !bad.bad {
		t.Fatalf("a value without a COPY text form: got %v (bad %v), want errNoCopyText", err, bad.bad)
	}
}

// TestUpsertRowsChunks: the statement forms (SQLite, MySQL) write a batch
// of several full chunks and a remainder, the full chunks through one
// prepared statement: every row lands, and a second batch updates them.
func TestUpsertRowsChunks(t *testing.T) {
	t.Parallel()
	for _, sk := range []storeKind{sqliteStore(), mysqlStore()} {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			db, d, err := openStore(sk.fresh(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			st := &store{db: db, d: d}
			ctx := t.Context()
			if _, err := db.ExecContext(ctx, `CREATE TABLE ch (id bigint PRIMARY KEY, note varchar(40))`); err != nil {
				t.Fatal(err)
			}
			n := 2*st.chunk(2) + 37
			for _, tag := range []string{"first", "second"} {
				batch := make([][]any, n)
				for i := range batch {
					batch[i] = []any{int64(i), fmt.Sprintf("%s %d", tag, i)}
				}
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.upsertRows(ctx, tx, "ch", []string{"id", "note"}, 1, batch); err != nil {
					t.Fatalf("upsert %s: %v", tag, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			var count, second int
			rs, err := db.QueryContext(ctx, `SELECT id, note FROM ch`)
			if err != nil {
				t.Fatal(err)
			}
			for rs.Next() {
				var id int64
				var note string
				if err := rs.Scan(&id, &note); err != nil {
					t.Fatal(err)
				}
				count++
				if note == fmt.Sprintf("second %d", id) {
					second++
				}
			}
			if err := rs.Err(); err != nil {
				t.Fatal(err)
			}
			rs.Close()
			if count != n || second != n {
				t.Fatalf("rows: got %d (%d of the second batch), want %d (%d)", count, second, n, n)
			}
		})
	}
}

// openTestStore opens the store at url for the test, closed at its end.
func openTestStore(t *testing.T, url string) *store {
	t.Helper()
	db, d, err := openStore(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &store{db: db, d: d}
}

// TestUpsertCopyColumnTypeAltered: a column's type altered between two
// batches of a running store (its pooled connection keeping the temporary
// table of the first) is the type the second batch's values go through:
// not rounded as a real, refused as an integer or cut to a date.
func TestUpsertCopyColumnTypeAltered(t *testing.T) {
	t.Parallel()
	sk := postgresStore(t)
	at := time.Date(2024, 1, 2, 12, 34, 56, 0, time.UTC)
	for _, c := range []struct {
		name          string
		temp          bool // through the temporary table (else straight in)
		from, to      string
		first, second []any
		want          string // a condition on v of the second row
	}{
		{"real to double", true, "real", "double precision", []any{int64(1), 0.5}, []any{int64(1), 0.1}, "v = 0.1::float8"},
		{"integer to bigint", true, "integer", "bigint", []any{int64(1), int64(5)}, []any{int64(1), int64(5_000_000_000)}, "v = 5000000000"},
		{"date to timestamptz", false, "date", "timestamp with time zone", []any{int64(1), at}, []any{int64(2), at}, "v = '2024-01-02 12:34:56+00'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := openTestStore(t, sk.fresh(t))
			st.db.SetMaxOpenConns(1) // one connection: the first batch's temporary table is the second's
			ctx := t.Context()
			if _, err := st.db.ExecContext(ctx, `CREATE TABLE a (id bigint PRIMARY KEY, v `+c.from+`)`); err != nil {
				t.Fatal(err)
			}
			if c.temp {
				st.skipDirect = map[string]int{"a": math.MaxInt}
			}
			for i, row := range [][]any{c.first, c.second} {
				if i == 1 {
					if _, err := st.db.ExecContext(ctx, `ALTER TABLE a ALTER COLUMN v TYPE `+c.to); err != nil {
						t.Fatal(err)
					}
				}
				tx, err := st.begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.upsertRows(ctx, tx, "a", []string{"id", "v"}, 1, [][]any{row}); err != nil {
					t.Fatalf("batch %d: upsert: %v", i+1, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				st.end()
			}
			var ok bool
			var got string
			if err := st.db.QueryRowContext(ctx, `SELECT `+c.want+`, v::text FROM a WHERE id = $1`, c.second[0]).Scan(&ok, &got); err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Errorf("stored %s, want %s", got, c.want)
			}
		})
	}
}

// TestUpsertCopyConnectionBroken: a COPY whose connection is broken while
// pgconn's goroutine still encodes its rows (a value of tens of MB) fails
// the batch, and the next batch does not share that goroutine's buffer
// (the race detector's report, without copyFrom's).
func TestUpsertCopyConnectionBroken(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, postgresStore(t).fresh(t))
	ctx := t.Context()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE b (id bigint PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	tx, err := st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := queryRow(ctx, tx, `SELECT pg_backend_pid()`, &pid); err != nil {
		t.Fatal(err)
	}
	// Terminates the batch's backend once its COPY has started: the
	// reader is then encoding the large value (escaped byte by byte).
	killed := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(testTimeout)
		for time.Now().Before(deadline) {
			var done bool
			err := st.db.QueryRowContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE pid = $1 AND state = 'active' AND query LIKE 'COPY %'`, pid).Scan(&done)
			if err == nil || !errors.Is(err, sql.ErrNoRows) {
				killed <- err
				return
			}
			time.Sleep(time.Millisecond) // polling toward the deadline
		}
		killed <- errors.New("the batch's COPY was not seen running")
	}()
	big := strings.Repeat("a\tb\\c\n", 8<<20)
	if err := st.upsertRows(ctx, tx, "b", []string{"id", "v"}, 1, [][]any{{int64(1), big}}); err == nil {
		t.Fatal("upsert under a terminated backend: got nil, want an error")
	}
	st.end()
	if err := <-killed; err != nil {
		t.Fatalf("terminate the batch's backend: %v", err)
	}
	tx, err = st.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.end()
	if err := st.upsertRows(ctx, tx, "b", []string{"id", "v"}, 1, [][]any{{int64(2), "two"}}); err != nil {
		t.Fatalf("the next batch: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := st.db.QueryRowContext(ctx, `SELECT string_agg(id || '=' || v, ',') FROM b`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "2=two" {
		t.Errorf("rows: got %q, want %q", got, "2=two")
	}
}

// TestUpsertSmallBatchMatchesCopy: on PostgreSQL a batch that fits one
// statement is upserted by one multi-row INSERT instead of COPY (no
// temporary table, no COPY attempt), and stores exactly what the COPY form
// stores, type by type, nulls and conflicting updates included.
func TestUpsertSmallBatchMatchesCopy(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	ctx := t.Context()
	copyStore, stmtStore := openTestStore(t, url), openTestStore(t, url)
	stmtStore.statementBelow = 1000 // both batches by the statement form
	cols := []string{"id", "the text", "tags", "nums", "fs", "oks", "amount", "at", "local", "day", "raw", "f", "r", "ok", "doc", "js", "n"}
	str := func(s string) *string { return &s }
	num := func(n int64) *int64 { return &n }
	fl := func(f float64) *float64 { return &f }
	bo := func(b bool) *bool { return &b }
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	local := time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.FixedZone("x", 5*3600))
	full := func(id int64, text string) []any {
		return []any{id, text, []*string{str(`a "q" \ b`), nil, str("t\tab"), str("{}"), str("")}, []*int64{num(1), nil, num(-3)},
			[]*float64{fl(0.1), nil, fl(math.Inf(1))}, []*bool{bo(true), nil},
			"-12345678901234567890.125", at, local, at, []byte{0, 1, 0xfe, '\\', '\t'}, math.Inf(-1), float32(0.1), true,
			`{"k": "v\n", "a": [1, 2.5, null]}`, `{"b":1,  "a":"\u00e9"}`, int32(-7)}
	}
	nulls := func(id int64) []any {
		r := make([]any, len(cols))
		r[0] = id
		return r
	}
	empty := func(id int64) []any {
		return []any{id, "", []*string{}, []*int64{}, []*float64{}, []*bool{}, "0", at, local, at, []byte{}, 0.0, float32(0), false, `{}`, `[]`, int32(0)}
	}
	batches := [][][]any{
		{full(1, "first"), nulls(2), empty(3), full(4, "line\nbreak\\ and\ttab")},
		{full(2, "was null"), nulls(1), full(5, "new"), empty(4)}, // updates among inserts
	}
	for _, tc := range []struct {
		table string
		st    *store
		temps []int // per batch, temporary tables of the COPY path in the session
	}{
		{"by_copy", copyStore, []int{0, 1}}, // the second batch's direct COPY meets its updates
		{"by_statement", stmtStore, []int{0, 0}},
	} {
		create := fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, "the text" text, tags text[], nums bigint[], fs double precision[], oks boolean[],
			amount numeric, at timestamptz, local timestamp, day date, raw bytea, f double precision, r real, ok boolean, doc jsonb, js json, n integer)`, tc.table)
		if _, err := tc.st.db.ExecContext(ctx, create); err != nil {
			t.Fatal(err)
		}
		for i, b := range batches {
			tx, err := tc.st.begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.st.upsertRows(ctx, tx, tc.table, cols, 1, b); err != nil {
				t.Fatalf("%s: batch %d: %v", tc.table, i, err)
			}
			var temps int
			if err := queryRow(ctx, tx, `SELECT count(*) FROM pg_class WHERE relname LIKE 'replicator_copy_%' AND relpersistence = 't' AND pg_table_is_visible(oid)`, &temps); err != nil {
				t.Fatal(err)
			}
			if temps != tc.temps[i] {
				t.Errorf("%s: batch %d: temporary tables of the COPY path in the session: got %d, want %d", tc.table, i, temps, tc.temps[i])
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			tc.st.end()
		}
	}
	// Each row as PostgreSQL prints it: every column's stored value.
	dump := func(table string) string {
		res, err := copyStore.db.QueryContext(ctx, fmt.Sprintf("SELECT t::text FROM %s AS t ORDER BY id", table))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Close()
		var out []string
		for res.Next() {
			var r string
			if err := res.Scan(&r); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "\n")
	}
	byCopy, byStatement := dump("by_copy"), dump("by_statement")
	if byCopy != byStatement {
		t.Errorf("the statement form stored\n%s\nthe COPY form\n%s", byStatement, byCopy)
	}
	if n := strings.Count(byCopy, "\n") + 1; n != 5 {
		t.Errorf("rows: got %d, want 5:\n%s", n, byCopy)
	}
}

// TestCasOffsetsPartitions: PostgreSQL moves every partition's offset in
// one statement; one partition not at its expected offset fences the
// batch, naming that partition, and moves none.
func TestCasOffsetsPartitions(t *testing.T) {
	t.Parallel()
	url := postgresStore(t).fresh(t)
	st := openTestStore(t, url)
	ctx := t.Context()
	if err := st.ensureSinkTables(ctx); err != nil {
		t.Fatal(err)
	}
	parts := []tp{{"a", 0}, {"a", 1}, {"b", 0}, {"b", 5}}
	cas := func(expected, next map[tp]int64) error {
		tx, err := st.begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.end()
		if err := st.casOffsets(ctx, tx, "m", expected, next); err != nil {
			return err
		}
		return tx.Commit()
	}
	at := func(off ...int64) map[tp]int64 {
		m := map[tp]int64{}
		for i, p := range parts {
			m[p] = off[i]
		}
		return m
	}
	if err := cas(at(-1, -1, -1, -1), at(10, 20, 30, 40)); err != nil {
		t.Fatalf("first offsets: %v", err)
	}
	if err := cas(at(10, 20, 30, 40), at(11, 21, 31, 41)); err != nil {
		t.Fatalf("move every partition: %v", err)
	}
	err := cas(at(11, 21, 30, 41), at(12, 22, 32, 42))
	if !errors.Is(err, errFenced) || !strings.Contains(err.Error(), "b/0 is no longer at offset 30") {
		t.Fatalf("one partition moved by another process: got %v, want a fence naming b/0", err)
	}
	got, err := st.loadOffsets(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		if want := at(11, 21, 31, 41)[p]; got[p].next != want {
			t.Errorf("partition %s/%d: stored %d, want %d (row %d)", p.topic, p.part, got[p].next, want, i)
		}
	}
}

// BenchmarkUpsertPostgresSmall compares PostgreSQL's upsert forms on the
// steady state's batches: 100 rows of the bench table's shape (text[]
// included), half new keys and half updates of the previous batch's new
// keys, each batch in its own transaction with one offset row moved:
// the multi-row INSERT (a batch that fits one statement) and COPY (a
// direct COPY failing on the updates, then the temporary table).
//
//	go test -run '^$' -bench UpsertPostgresSmall -benchtime 2000x ./sink/
func BenchmarkUpsertPostgresSmall(b *testing.B) {
	cl := pgtest.Start(b)
	for _, form := range []string{"statement", "copy"} {
		b.Run(form, func(b *testing.B) {
			st := benchStore(b, cl, fmt.Sprintf("small_%s_%d", form, b.N))
			db := st.db
			if form == "statement" {
				st.statementBelow = 1000
			}
			ctx := b.Context()
			if err := st.ensureSinkTables(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, name text, email text, amount numeric(12,2),
				created_at timestamptz, attrs jsonb, quantity integer, active boolean, note text, tags text[])`); err != nil {
				b.Fatal(err)
			}
			cols := []string{"id", "name", "email", "amount", "created_at", "attrs", "quantity", "active", "note", "tags"}
			const half = 50
			at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
			tag := "t1"
			part := tp{"topic", 0}
			offset := int64(-1)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				rows := make([][]any, 0, 2*half)
				for j := range 2 * half {
					id := int64(i*half + j) // the second half: the next batch's updates
					rows = append(rows, []any{id, fmt.Sprintf("customer %d", id), fmt.Sprintf("customer.%d@example.com", id), "1234.50",
						at.Add(time.Duration(id) * time.Second), `{"plan": "pro", "seats": 7}`, int32(i), id%2 == 0, "note " + fmt.Sprint(id), []*string{&tag}})
				}
				b.StartTimer()
				tx, err := st.begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := st.upsertRows(ctx, tx, "t", cols, 1, rows); err != nil {
					b.Fatal(err)
				}
				if err := st.casOffsets(ctx, tx, "m", map[tp]int64{part: offset}, map[tp]int64{part: int64(i)}); err != nil {
					b.Fatal(err)
				}
				offset = int64(i)
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				st.end()
			}
			b.ReportMetric(float64(b.N*2*half)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// queryRow scans the one row of query, run in tx.
func queryRow(ctx context.Context, tx batchTx, query string, dest ...any) error {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// benchStore opens a store on a new database name of cl, closed when b
// ends.
func benchStore(b *testing.B, cl *pgcluster.Cluster, name string) *store {
	b.Helper()
	if err := cl.CreateDatabase(b.Context(), name); err != nil {
		b.Fatal(err)
	}
	db, d, err := openStore(cl.DSN(name))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return &store{db: db, d: d}
}

// TestUpsertEncodedLines: rows encoded ahead as COPY lines go through COPY
// as they are while the table's column types are those they were encoded
// for, straight in or through the temporary table; a type altered since
// makes the batch convert those rows (expand) and encode them anew.
func TestUpsertEncodedLines(t *testing.T) {
	t.Parallel()
	sk := postgresStore(t)
	at := time.Date(2024, 1, 2, 12, 34, 56, 0, time.UTC)
	for _, c := range []struct {
		name     string
		temp     bool
		alter    bool
		expanded bool
		want     string
	}{
		{"straight in", false, false, false, "v = '2024-01-02'::date"},
		{"through the temporary table", true, false, false, "v = '2024-01-02'::date"},
		{"type altered, straight in", false, true, true, "v = '2024-01-02 12:34:56+00'"},
		{"type altered, through the temporary table", true, true, true, "v = '2024-01-02 12:34:56+00'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := openTestStore(t, sk.fresh(t))
			ctx := t.Context()
			if _, err := st.db.ExecContext(ctx, `CREATE TABLE a (id bigint PRIMARY KEY, v date)`); err != nil {
				t.Fatal(err)
			}
			if c.temp {
				st.skipDirect = map[string]int{"a": math.MaxInt}
			}
			if c.alter {
				if _, err := st.db.ExecContext(ctx, `ALTER TABLE a ALTER COLUMN v TYPE timestamptz`); err != nil {
					t.Fatal(err)
				}
			}
			tx, err := st.begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			expanded := 0
			rows := [][]any{{int64(1), at}, nil}
			lines := [][]byte{nil, []byte("2\t2024-01-02\n")}
			err = st.upsertEncoded(ctx, tx, "a", []string{"id", "v"}, 1, rows, lines, []string{"bigint", "date"}, func(i int) ([]any, error) {
				expanded++
				return []any{int64(i + 1), at}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			st.end()
			if (expanded > 0) != c.expanded {
				t.Errorf("rows converted again: %d, want them converted: %v", expanded, c.expanded)
			}
			var n int
			if err := st.db.QueryRowContext(ctx, `SELECT count(*) FROM a WHERE id = 1 OR (id = 2 AND `+c.want+`)`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Errorf("%d of the 2 rows as expected (row 2: %s)", n, c.want)
			}
		})
	}
}
