package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/cdc"
	"github.com/replicator/replicator/mapping"
	"github.com/replicator/replicator/registry"
	"github.com/twmb/franz-go/pkg/kgo"
)

// shownRecord is one record read back from an entity topic.
type shownRecord struct {
	partition int32
	offset    int64
	op        cdc.Op // 0 when the record has no valid op header
	key       map[string]any
	value     map[string]any // nil: tombstone
}

// showTopics reads every entity topic back from the broker, like any
// consumer would, and prints counts per topic, a few decoded records and a
// tombstone.
func showTopics(ctx context.Context, ep endpoints, out io.Writer) error {
	rcl, err := registry.NewClient(registry.ClientConfig{URL: ep.RegistryURL})
	if err != nil {
		return err
	}
	codec := mapping.NewCodec()
	schemas := map[int]avro.Schema{}
	decode := func(b []byte) (map[string]any, error) {
		id, payload, err := mapping.SplitConfluent(b)
		if err != nil {
			return nil, err
		}
		s, ok := schemas[id]
		if !ok {
			ss, err := rcl.SchemaByID(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("fetch schema %d: %w", id, err)
			}
			if s, err = codec.Parse(ss.Schema); err != nil {
				return nil, err
			}
			schemas[id] = s
		}
		return codec.Decode(s, payload)
	}
	for _, e := range ep.Entities {
		records, err := readAll(ctx, []kgo.Opt{kgo.SeedBrokers(ep.Brokers...)}, e.Topic(), decode)
		if err != nil {
			return err
		}
		keys, tombstones, ops := map[string]bool{}, 0, map[cdc.Op]int{}
		for _, r := range records {
			keys[fmt.Sprint(r.key)] = true
			ops[r.op]++
			if r.value == nil {
				tombstones++
			}
		}
		fmt.Fprintf(out, "\n--- topic %s: %d records, %d distinct keys, %d tombstones; by op: %s\n",
			e.Topic(), len(records), len(keys), tombstones, formatOps(ops))
		shown := 0
		for _, r := range records {
			if r.value != nil && (shown < 2 || r.op == cdc.OpUpdate && shown < 3) {
				fmt.Fprintf(out, "    p%d@%d op=%s key=%s value=%s\n", r.partition, r.offset, r.op, formatMap(r.key), formatMap(r.value))
				shown++
			}
		}
		for _, r := range records {
			if r.value == nil {
				fmt.Fprintf(out, "    p%d@%d op=%s key=%s value=null (tombstone)\n", r.partition, r.offset, r.op, formatMap(r.key))
				break
			}
		}
	}
	return nil
}

// readAll consumes a topic from the start up to its end offsets at call
// time.
func readAll(ctx context.Context, opts []kgo.Opt, topic string, decode func([]byte) (map[string]any, error)) ([]shownRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var records []shownRecord
	_, err := broker.ReadToEnd(ctx, opts, topic, nil, func(r *kgo.Record) error {
		rec := shownRecord{partition: r.Partition, offset: r.Offset}
		rec.op, _ = cdc.RecordOp(r.Headers) // shown as "?" when missing
		var err error
		if rec.key, err = decode(r.Key); err == nil && r.Value != nil {
			rec.value, err = decode(r.Value)
		}
		if err != nil {
			return fmt.Errorf("decode the record of %s at partition %d offset %d: %w", topic, r.Partition, r.Offset, err)
		}
		records = append(records, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return records, nil
}

func formatOps(ops map[cdc.Op]int) string {
	var parts []string
	for _, op := range []cdc.Op{cdc.OpRead, cdc.OpCreate, cdc.OpUpdate, cdc.OpDelete, 0} {
		if ops[op] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", op, ops[op]))
		}
	}
	return strings.Join(parts, " ")
}

func formatMap(m map[string]any) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		v := m[k]
		switch x := v.(type) {
		case time.Time:
			v = x.Format(time.RFC3339Nano)
		case string:
			v = fmt.Sprintf("%q", x)
		case nil:
			v = "null"
		}
		parts[i] = fmt.Sprintf("%s:%v", k, v)
	}
	return "{" + strings.Join(parts, " ") + "}"
}
