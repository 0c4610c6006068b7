package mapping

import (
	"math/big"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/relation"
)

// benchTable is a typical 10-column entity row (~170 bytes of Avro).
func benchTable() (*relation.Table, []any) {
	t := &relation.Table{Schema: "public", Name: "orders", PrimaryKey: []string{"id"}, Columns: []relation.Column{
		col("id", tInt8, false),
		col("customer", tUUID, false),
		col("status", tEnum, false),
		col("quantity", tInt4, false),
		col("price", numeric(12, 2), false),
		col("note", tText, true),
		col("paid", tBool, false),
		col("created_at", tTimestampTZ, false),
		col("shipped_at", tTimestampTZ, true),
		col("tags", arrayOf(tText), true),
	}}
	row := []any{
		int64(123456789), "0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f", "shipped", int32(3), "1234.50",
		"please leave the parcel at the back door, next to the blue bin", true,
		time.Date(2024, 5, 1, 12, 0, 0, 123456000, time.UTC), nil, []any{"gift", "express"},
	}
	return t, row
}

func BenchmarkAppendValue(b *testing.B) {
	table, row := benchTable()
	e, err := NewEntity(Spec{Name: "orders", Topic: "orders"}, table, Options{})
	if err != nil {
		b.Fatal(err)
	}
	dst, err := e.AppendValue(nil, row)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(dst)))
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = e.AppendValue(dst[:0], row); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendKey(b *testing.B) {
	table, row := benchTable()
	e, err := NewEntity(Spec{Name: "orders", Topic: "orders"}, table, Options{})
	if err != nil {
		b.Fatal(err)
	}
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = e.AppendKey(dst[:0], row); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHambaMarshalMap is the alternative AppendValue replaces: hamba's
// Marshal of a reused map (the values already converted), for comparison.
func BenchmarkHambaMarshalMap(b *testing.B) {
	table, row := benchTable()
	e, err := NewEntity(Spec{Name: "orders", Topic: "orders"}, table, Options{})
	if err != nil {
		b.Fatal(err)
	}
	api := avro.Config{}.Freeze()
	m := make(map[string]any, len(row))
	b.ReportAllocs()
	for b.Loop() {
		for i, c := range table.Columns {
			v := row[i]
			switch c.Name {
			case "price":
				v, _ = new(big.Rat).SetString(v.(string))
			}
			m[c.Name] = v
		}
		if _, err := api.Marshal(e.ValueAvroSchema(), m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	table, row := benchTable()
	e, err := NewEntity(Spec{Name: "orders", Topic: "orders"}, table, Options{})
	if err != nil {
		b.Fatal(err)
	}
	payload, err := e.AppendValue(nil, row)
	if err != nil {
		b.Fatal(err)
	}
	c := NewCodec()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decode(e.ValueAvroSchema(), payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendValueText is the snapshot's path: the row of benchTable
// as PostgreSQL's text, encoded without decoding it into values.
func BenchmarkAppendValueText(b *testing.B) {
	table, _ := benchTable()
	e, err := NewEntity(Spec{Name: "orders", Topic: "orders"}, table, Options{})
	if err != nil {
		b.Fatal(err)
	}
	row := [][]byte{[]byte("123456789"), []byte("0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f"), []byte("shipped"), []byte("3"),
		[]byte("1234.50"), []byte("please leave the parcel at the back door, next to the blue bin"), []byte("t"),
		[]byte("2024-05-01 12:00:00.123456+00"), nil, []byte("{gift,express}")}
	dst, err := e.AppendValueText(nil, row)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(dst)))
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = e.AppendValueText(dst[:0], row); err != nil {
			b.Fatal(err)
		}
	}
}
