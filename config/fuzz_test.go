package config

import "testing"

// fullConfig sets every key, so the fuzzer starts from real key names.
const fullConfig = `
data_dir: ./data
log: {level: debug, format: json, stats_interval: 1m}
metrics: {listen: 127.0.0.1:9187, stall_timeout: 60s, slot_poll_interval: 10s}
source:
  url: postgres://u:secret@localhost:5432/db?sslmode=require&sslpassword=pw
  slot: replicator
  publication: replicator
  snapshot: initial
  status_interval: 10s
  snapshot_workers: 2
  snapshot_chunk_rows: 50000
  snapshot_progress_interval: 10s
  snapshot_gc_percent: 200
  unconstrained_numeric: string
  reconnect: {initial_backoff: 500ms, max_backoff: 30s, give_up_after: 0s}
kafka:
  brokers: [127.0.0.1:9092]
  listen: 127.0.0.1:9092
  client_id: replicator
  partitions: 6
  replication_factor: -1
  compression: zstd
  max_buffered_records: 100000
  linger: 2ms
  tls: {enabled: true, ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, insecure_skip_verify: false}
  sasl: {mechanism: SCRAM-SHA-256, username: u, password: p}
registry: {url: "http://u:p@localhost:8081", listen: 127.0.0.1:8081, username: u, password: p, ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}
entities:
  - name: orders
    table: public.orders
    topic: orders
    key: [id]
    columns: [id, total]
    as_string: [total]
    partitions: 3
    on_truncate: tombstone
    compatibility: full
`

// FuzzLoad: no YAML makes the loader or Validate panic; what it accepts
// validates again.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(fullConfig))
	f.Add([]byte(minimal))
	f.Add([]byte("kafka: {linger: -5ms, partitions: 4294967297}\nsource: {status_interval: 10}\n"))
	f.Add([]byte("entities: [1, [2], {table: {x: y}}, {partitions: ''}]\n"))
	f.Add([]byte("source: !!binary aGVsbG8=\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := load(data, true, nil, (*Config).Validate)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a config Validate refuses: %v", err)
		}
	})
}
