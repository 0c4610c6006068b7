package pipeline

import (
	"testing"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/source"
)

// BenchmarkHandle produces 10-column rows through Handle to an in-process
// broker (6 partitions, the default producer options: acks=all,
// idempotent, uncompressed) and reports records/s, Flush included. It is a
// measurement, not an assertion.
func BenchmarkHandle(b *testing.B) {
	br := startBroker(b)
	topic := topicName(b)
	ensureTopic(b, br.Addr(), topic, 6, nil)
	table := accountsTable()
	p := New(newEntities(b, table, topic), newClient(b, br.Addr(), &broker.ProducerConfig{}))
	ctx := b.Context()
	row := accountRow(0, 1)
	c := change(table, source.OpInsert, row, nil)

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		row[colID] = int64(i)
		if err := p.Handle(ctx, c); err != nil {
			b.Fatalf("Handle: %v", err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatalf("Flush: %v", err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
