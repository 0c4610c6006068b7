package pipeline

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TooLargeError is returned by Handle when a change's record would not fit
// in one record batch of kafka.max_message_bytes: the producer would fail
// it, and the stream would have to stop there anyway. Handle returns it
// before producing anything for the change, so the change is never
// acknowledged and a restart meets it again.
type TooLargeError struct {
	Table string // schema-qualified
	Topic string
	Key   string        // the row's key as PostgreSQL prints it
	LSN   pglogrepl.LSN // commit LSN (a snapshot row: the consistent point)
	// Size is the record's size in a batch (key, value, headers and
	// framing), Limit the producer's (kafka.max_message_bytes).
	Size, Limit int
	// Columns are the exported columns' sizes as PostgreSQL sent them,
	// largest first.
	Columns []ColumnSize
}

// ColumnSize is one column's share of a too large record.
type ColumnSize struct {
	Name  string
	Bytes int
}

// maxListedColumns is how many columns a TooLargeError names.
const maxListedColumns = 5

func (e *TooLargeError) Error() string {
	var cols strings.Builder
	for i, c := range e.Columns {
		if i == maxListedColumns {
			fmt.Fprintf(&cols, ", … (%d more)", len(e.Columns)-i)
			break
		}
		if i > 0 {
			cols.WriteString(", ")
		}
		fmt.Fprintf(&cols, "%s %d bytes", c.Name, c.Bytes)
	}
	return fmt.Sprintf("row of %s key %s at LSN %s is a %d-byte record, over kafka.max_message_bytes (%d); largest columns: %s. "+
		"It is not produced or confirmed: every restart stops here again until one of these is done: "+
		"set kafka.compression (zstd or lz4) and kafka.max_message_bytes to at least %d: replicator gives topics it creates that max.message.bytes, "+
		"and refuses to start until an existing topic %q has it too (the broker compares the compressed batch with it, so compression keeps such rows cheap to send and store; the producer's limit is on the uncompressed record); "+
		"or leave the column out of the entity's columns",
		e.Table, e.Key, e.LSN, e.Size, e.Limit, cols.String(), e.Size, e.Topic)
}

// batchOverhead bounds the bytes a record batch holding one record adds
// around it, as kgo counts them against ProducerBatchMaxBytes: the v2
// batch header (61) and the records' length prefix, 4 bytes before
// flexible produce requests, up to 5 (a uvarint) since. Counting the
// larger one means a record kgo would refuse, whatever the produce
// version, is always caught by tooLarge first, with its table, key and
// columns; at most 4 bytes more are refused than kgo would.
const batchOverhead = 61 + 5

// batchSize is the size r takes as the only record of a batch, as kgo and
// the broker count it: the record's fields with varint lengths (its offset
// and timestamp deltas are zero, one byte each).
func batchSize(r *kgo.Record) int {
	l := 1 + 1 + 1 + // attributes, timestamp delta, offset delta
		varintLen(len(r.Key)) + len(r.Key) +
		varintLen(len(r.Value)) + len(r.Value) +
		varintLen(len(r.Headers))
	for _, h := range r.Headers {
		l += varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value)
	}
	return batchOverhead + varintLen(l) + l
}

// varintLen is the length of n as a zig-zag varint.
func varintLen(n int) int {
	u := uint64(n) << 1
	l := 1
	for u >= 0x80 {
		u >>= 7
		l++
	}
	return l
}

// tooLarge returns a *TooLargeError when r, the record of change c,
// exceeds the pipeline's limit.
func (p *Pipeline) tooLarge(e *Entity, c *source.Change, r *kgo.Record) error {
	if p.maxMessageBytes <= 0 {
		return nil
	}
	size := batchSize(r)
	if size <= p.maxMessageBytes {
		return nil
	}
	err := &TooLargeError{
		Table: c.Table.QualifiedName(), Topic: r.Topic, Key: keyText(e, c), LSN: c.LSN,
		Size: size, Limit: p.maxMessageBytes,
	}
	for _, name := range e.Mapping.ValueColumns() {
		_, i, ok := c.Table.Column(name)
		if !ok {
			continue
		}
		var n int
		if c.Text != nil {
			n = len(c.Text[i])
		} else {
			n = valueSize(c.New[i])
		}
		err.Columns = append(err.Columns, ColumnSize{Name: name, Bytes: n})
	}
	slices.SortStableFunc(err.Columns, func(a, b ColumnSize) int { return cmp.Compare(b.Bytes, a.Bytes) })
	return err
}

// valueSize approximates a decoded value's size: exact for text and
// bytes, the sum of the elements for arrays, 8 for fixed-width values.
func valueSize(v any) int {
	switch v := v.(type) {
	case nil:
		return 0
	case string:
		return len(v)
	case []byte:
		return len(v)
	case []any:
		n := 0
		for _, x := range v {
			n += valueSize(x)
		}
		return n
	default:
		return 8
	}
}

// produceError is the failure of record r as reported by the producer,
// with the fix when the broker refused it as too large (its topic's
// max.message.bytes or the broker's message.max.bytes is below the
// producer's limit, e.g. changed since replicator checked it at start).
func (p *Pipeline) produceError(r *kgo.Record, err error) error {
	if !errors.Is(err, kerr.MessageTooLarge) {
		return fmt.Errorf("produce to %s: %w", r.Topic, err)
	}
	limit := "the producer's limit"
	if p.maxMessageBytes > 0 {
		limit = fmt.Sprintf("kafka.max_message_bytes (%d)", p.maxMessageBytes)
	}
	return fmt.Errorf("produce to %s: a batch with a %d-byte record was refused as too large (%w): the topic's max.message.bytes "+
		"(or the broker's message.max.bytes) is below %s; raise it with `kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics --entity-name %s --add-config max.message.bytes=%d`, "+
		"or lower kafka.max_message_bytes to the topic's limit",
		r.Topic, batchSize(r), err, limit, r.Topic, max(p.maxMessageBytes, batchSize(r)))
}
