package mapping_test

import (
	"fmt"
	"time"

	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/relation"
)

func Example() {
	table := &relation.Table{
		Schema: "public", Name: "orders",
		Columns: []relation.Column{
			{Name: "id", Type: relation.Type{Kind: relation.Int64, Name: "bigint"}},
			{Name: "total", Type: relation.Type{Kind: relation.Numeric, Name: "numeric(10,2)", Precision: 10, Scale: 2}},
			{Name: "note", Type: relation.Type{Kind: relation.Text, Name: "text"}, Nullable: true},
			{Name: "Placed At", Type: relation.Type{Kind: relation.TimestampTZ, Name: "timestamp with time zone"}},
		},
		PrimaryKey: []string{"id"},
	}
	e, err := mapping.NewEntity(mapping.Spec{Name: "orders", Topic: "shop.orders"}, table, mapping.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.KeySubject(), e.KeySchema())
	fmt.Println(e.ValueSubject(), e.ValueSchema())

	row := []any{int64(7), "19.9", nil, time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	key, err := e.AppendKey(nil, row)
	if err != nil {
		fmt.Println(err)
		return
	}
	value, err := e.AppendValue(mapping.AppendConfluentHeader(nil, 42), row)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("key   % x\n", key)
	fmt.Printf("value % x\n", value)

	id, payload, err := mapping.SplitConfluent(value)
	if err != nil {
		fmt.Println(err)
		return
	}
	decoded, err := mapping.NewCodec().Decode(e.ValueAvroSchema(), payload)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id, decoded)
	// Output:
	// shop.orders-key {"name":"replicator.public.orders_key","type":"record","fields":[{"name":"id","type":"long"}]}
	// shop.orders-value {"name":"replicator.public.orders","type":"record","fields":[{"name":"id","type":"long"},{"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},{"name":"note","type":["null","string"],"default":null},{"name":"Placed_At","type":{"type":"long","logicalType":"timestamp-micros"},"pg.column":"Placed At"}]}
	// key   0e
	// value 00 00 00 00 2a 0e 04 07 c6 00 80 c0 c9 9d e7 d8 8b 06
	// 42 map[Placed_At:2024-05-01 12:00:00 +0000 UTC id:7 note:<nil> total:19.90]
}
