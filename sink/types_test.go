package sink

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestTypes writes every Avro type of the topic format into each store
// through a created table and reads it back as text.
func TestTypes(t *testing.T) {
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
		{"name":"lts","type":{"type":"long","logicalType":"local-timestamp-micros"}},
		{"name":"tags","type":["null",{"type":"array","items":["null","string"]}],"default":null},
		{"name":"nums","type":{"type":"array","items":["null","long"]}},
		{"name":"attrs","type":{"type":"map","values":"long"}},
		{"name":"opt","type":["null",{"type":"map","values":"long"}],"default":null}
	]}`
	key := `{"type":"record","name":"typed_key","fields":[{"name":"id","type":"long"}]}`
	cols := []string{"id", "i", "f", "d", "b", "s", "raw", "amount", "u", "day", "tod", "ts", "lts", "tags", "nums", "attrs", "opt"}
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	rec := map[string]any{
		"id": int64(1), "i": 42, "f": float32(1.5), "d": 2.25, "b": true, "s": "text ü",
		"raw": []byte("bin"), "amount": big.NewRat(-123456, 100), "u": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"day": time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "tod": 13*time.Hour + 14*time.Minute + 15*time.Second + 16*time.Microsecond,
		"ts": ts, "lts": ts, "tags": []any{"a", nil, "c"}, "nums": []any{int64(1), nil, int64(-3)},
		// A map of one entry is a map, not a union's branch: it must stay
		// {"k":7}, not become 7.
		"attrs": map[string]any{"k": int64(7)}, "opt": map[string]any{"map": map[string]any{"k": int64(8)}},
	}
	for _, c := range []struct {
		sk   storeKind
		want string
	}{
		{sqliteStore(), `1|42|1.5|2.25|1|text ü|bin|-1234.56|6ba7b810-9dad-11d1-80b4-00c04fd430c8|2024-02-29|13:14:15.000016|2024-05-06T07:08:09.123456Z|2024-05-06T07:08:09.123456|["a",null,"c"]|[1,null,-3]|{"k":7}|{"k":8}`},
		{postgresStore(t), `1|42|1.5|2.25|true|text ü|bin|-1234.56|6ba7b810-9dad-11d1-80b4-00c04fd430c8|2024-02-29T00:00:00Z|13:14:15.000016|2024-05-06T07:08:09.123456Z|2024-05-06T07:08:09.123456Z|{a,NULL,c}|{1,NULL,-3}|{"k": 7}|{"k": 8}`},
		{mysqlStore(), `1|42|1.5|2.25|1|text ü|bin|-1234.56|6ba7b810-9dad-11d1-80b4-00c04fd430c8|2024-02-29T00:00:00Z|13:14:15.000016|2024-05-06T07:08:09.123456Z|2024-05-06T07:08:09.123456Z|["a",null,"c"]|[1,null,-3]|{"k":7}|{"k":8}`},
	} {
		t.Run(c.sk.name, func(t *testing.T) {
			t.Parallel()
			store := c.sk.fresh(t)
			e := newEnv(t)
			w := e.topic("typed", key, value)
			w.put(map[string]any{"id": int64(1)}, rec)
			var mcols []Column
			for _, n := range cols[1:] {
				mcols = append(mcols, Column{Name: n, Field: n})
			}
			r := e.start(ReadModel{Name: "typed", Table: "typed", Key: []string{"id"}, Sources: []Source{{Topic: "typed", Key: []string{"id"}, Owner: true, Columns: mcols}}}, store)
			r.waitRecords(t, 1)
			wantRows(t, store, "typed", cols, c.want)
		})
	}
}

// TestArrayTypeOverride: an array field whose column has a configured JSON
// type is written as JSON (PostgreSQL would refuse a PostgreSQL array
// there), and one with an array type override still as an array.
func TestArrayTypeOverride(t *testing.T) {
	t.Parallel()
	value := `{"type":"record","name":"tagged","fields":[
		{"name":"id","type":"long"},
		{"name":"tags","type":["null",{"type":"array","items":["null","string"]}],"default":null},
		{"name":"nums","type":{"type":"array","items":"long"}}
	]}`
	key := `{"type":"record","name":"tagged_key","fields":[{"name":"id","type":"long"}]}`
	cols := []string{"id", "tags_jsonb", "tags_json", "nums_text", "nums_array"}
	for _, c := range []struct {
		sk    storeKind
		types [4]string
		want  string
	}{
		{postgresStore(t), [4]string{"jsonb", "JSON", "text", "bigint[]"}, `1|["a", null, "c"]|["a",null,"c"]|[1,-3]|{1,-3}`},
		{mysqlStore(), [4]string{"json", "json", "text", "text"}, `1|["a",null,"c"]|["a",null,"c"]|[1,-3]|[1,-3]`},
		{sqliteStore(), [4]string{"jsonb", "json", "text", "text"}, `1|["a",null,"c"]|["a",null,"c"]|[1,-3]|[1,-3]`},
	} {
		t.Run(c.sk.name, func(t *testing.T) {
			t.Parallel()
			store := c.sk.fresh(t)
			e := newEnv(t)
			w := e.topic("tagged", key, value)
			w.put(map[string]any{"id": int64(1)}, map[string]any{"id": int64(1), "tags": []any{"a", nil, "c"}, "nums": []any{int64(1), int64(-3)}})
			w.put(map[string]any{"id": int64(2)}, map[string]any{"id": int64(2), "tags": nil, "nums": []any{}})
			mcols := []Column{
				{Name: "tags_jsonb", Field: "tags", Type: c.types[0]},
				{Name: "tags_json", Field: "tags", Type: c.types[1]},
				{Name: "nums_text", Field: "nums", Type: c.types[2]},
				{Name: "nums_array", Field: "nums", Type: c.types[3]},
			}
			r := e.start(ReadModel{Name: "tagged", Table: "tagged", Key: []string{"id"}, Sources: []Source{{Topic: "tagged", Key: []string{"id"}, Owner: true, Columns: mcols}}}, store)
			r.waitRecords(t, 2)
			empty := "2|NULL|NULL|[]|[]"
			if c.sk.name == "postgres" {
				empty = "2|NULL|NULL|[]|{}"
			}
			wantRows(t, store, "tagged", cols, c.want, empty)
		})
	}
}

// TestDecimalTextMatchesFloatString: the 64-bit formatting of decimals is
// big.Rat.FloatString's, rounding and signs included.
func TestDecimalTextMatchesFloatString(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	nums := []int64{0, 1, -1, 5, -5, 15, -15, 123456, -123456, math.MaxInt64, math.MinInt64, math.MinInt64 + 1, 999999999999}
	dens := []int64{1, 2, 3, 7, 10, 100, 1000, 3 * 1024, 1e18}
	for range 2000 {
		nums = append(nums, rng.Int64()>>rng.IntN(63))
		nums = append(nums, -(rng.Int64() >> rng.IntN(63)))
	}
	for i := range 200 {
		dens = append(dens, 1+rng.Int64N(int64(1)<<(1+i%62)))
	}
	for _, n := range nums {
		for j, d := range dens {
			r := big.NewRat(n, d)
			for _, scale := range []int{0, 1, 2, (j + int(n&7)) % 21, 19, 20} {
				if got, want := decimalText(r, scale), r.FloatString(scale); got != want {
					t.Fatalf("%d/%d at scale %d: got %s, want %s", n, d, scale, got, want)
				}
			}
		}
	}
	big1 := new(big.Rat).SetFrac(new(big.Int).Lsh(big.NewInt(1), 80), big.NewInt(3))
	if got, want := decimalText(big1, 4), big1.FloatString(4); got != want {
		t.Fatalf("2^80/3: got %s, want %s", got, want)
	}
}

// TestJoinsKey: a non-owner's row-key field joins the owner's key column
// when their decoded values hash alike for equal keys, whatever the
// nullability, and the value fits the column.
func TestJoinsKey(t *testing.T) {
	t.Parallel()
	f := func(k kind) fieldType { return fieldType{kind: k} }
	dec := func(p, s int) fieldType { return fieldType{kind: kindDecimal, precision: p, scale: s} }
	for _, tt := range []struct {
		name         string
		field, owner fieldType
		want         bool
	}{
		{"same kind", f(kindLong), f(kindLong), true},
		{"nullable field", fieldType{kind: kindLong, nullable: true}, f(kindLong), true},
		{"int into long", f(kindInt), f(kindLong), true},
		{"long into int", f(kindLong), f(kindInt), false},
		{"string into long", f(kindString), f(kindLong), false},
		{"string into uuid", f(kindString), f(kindUUID), true},
		{"uuid into string", f(kindUUID), f(kindString), true},
		{"decimals of one scale", dec(10, 2), dec(20, 2), true},
		{"decimals of two scales", dec(10, 2), dec(10, 3), false},
		{"arrays of one kind", fieldType{kind: kindJSON, array: true, items: kindLong}, fieldType{kind: kindJSON, array: true, items: kindLong}, true},
		{"array and string", fieldType{kind: kindJSON, array: true, items: kindString}, f(kindString), false},
	} {
		if got := joinsKey(tt.field, tt.owner); got != tt.want {
			t.Errorf("%s: joinsKey(%+v, %+v) = %v, want %v", tt.name, tt.field, tt.owner, got, tt.want)
		}
	}
}

// TestLagString: the message says which rule found the lag: the age of
// the unread records, or, when that could not be read, the time since
// the last commit; and names the way out.
func TestLagString(t *testing.T) {
	t.Parallel()
	l := Lag{ReadModel: "profile", Topic: "customers", Partition: 1, Stored: 5, Start: 0, End: 12, Recent: 9, Away: 3 * time.Hour, Retention: time.Hour}
	for _, tt := range []struct {
		l    Lag
		want string
	}{
		{l, "4 unread record offset(s) (5 to 8) were written longer ago than the topic's delete.retention.ms (1h0m0s)"},
		{func() Lag { l := l; l.ByCommit = true; return l }(), "its last batch was applied 3h0m0s ago, longer than the topic's delete.retention.ms (1h0m0s), and 7 record offset(s) are unread (their age could not be read)"},
		{func() Lag { l := l; l.Start = 6; return l }(), "its stored offset 5 is before the partition's first offset 6"},
	} {
		got := tt.l.String()
		if !strings.Contains(got, tt.want) || !strings.Contains(got, "replicator rebuild --read-model profile") {
			t.Errorf("%+v: got %q, want it to contain %q and the rebuild command", tt.l, got, tt.want)
		}
	}
}
