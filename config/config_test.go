package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "replicator.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const minimal = `
source:
  url: postgres://u@localhost/db
entities:
  - table: orders
`

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", cfg.DataDir, "./data"},
		{"slot", cfg.Source.Slot, "replicator"},
		{"publication", cfg.Source.Publication, "replicator"},
		{"snapshot", cfg.Source.Snapshot, SnapshotInitial},
		{"status_interval", cfg.Source.StatusInterval, 10 * time.Second},
		{"snapshot_workers", cfg.Source.SnapshotWorkers, 2},
		{"snapshot_chunk_rows", cfg.Source.SnapshotChunkRows, 50000},
		{"snapshot_progress_interval", cfg.Source.SnapshotProgressInterval, 10 * time.Second},
		{"snapshot_gc_percent", cfg.Source.SnapshotGCPercent, 200},
		{"sink.gc_percent", cfg.Sink.GCPercent, DefaultSinkGCPercent},
		{"reconnect.initial_backoff", cfg.Source.Reconnect.InitialBackoff, 500 * time.Millisecond},
		{"reconnect.max_backoff", cfg.Source.Reconnect.MaxBackoff, 30 * time.Second},
		{"reconnect.give_up_after", cfg.Source.Reconnect.GiveUpAfter, time.Duration(0)},
		{"kafka.listen", cfg.Kafka.Listen, "127.0.0.1:9092"},
		{"kafka.linger", cfg.Kafka.Linger, 2 * time.Millisecond},
		{"kafka.max_message_bytes", cfg.Kafka.MaxMessageBytes, 1048588},
		{"registry.listen", cfg.Registry.Listen, "127.0.0.1:8081"},
		{"embedded kafka", cfg.EmbeddedKafka(), true},
		{"embedded registry", cfg.EmbeddedRegistry(), true},
		{"entity name", cfg.Entities[0].Name, "orders"},
		{"entity topic", cfg.Entities[0].Topic, "orders"},
		{"entity partitions", cfg.Entities[0].Partitions, 6},
		{"entity on_truncate", cfg.Entities[0].OnTruncate, OnTruncateTombstone},
		{"entity compatibility", cfg.Entities[0].Compatibility, "full"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestEntityNames(t *testing.T) {
	t.Parallel()
	tests := []struct{ table, name string }{
		{"orders", "orders"},
		{"sales.Orders", "orders"},
		{`"Sales"."Order Lines"`, "Order Lines"},
		{`public."a.b"`, "a.b"},
	}
	for _, tt := range tests {
		if got := defaultEntityName(tt.table); got != tt.name {
			t.Errorf("defaultEntityName(%q): got %q, want %q", tt.table, got, tt.name)
		}
	}
}

func TestEnvironmentAndFlagsOverrideFile(t *testing.T) {
	t.Setenv("REPLICATOR_SOURCE_URL", "postgres://env@localhost/db")
	t.Setenv("REPLICATOR_SOURCE_SLOT", "from_env")
	t.Setenv("REPLICATOR_KAFKA_BROKERS", "a:9092,b:9092")
	t.Setenv("REPLICATOR_SOURCE_STATUS_INTERVAL", "250ms")
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--data-dir", "/var/lib/replicator"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(writeConfig(t, minimal+"data_dir: /from/file\n"), fs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.URL != "postgres://env@localhost/db" {
		t.Errorf("source.url: got %q, want the environment's", cfg.Source.URL)
	}
	if cfg.Source.Slot != "from_env" {
		t.Errorf("source.slot: got %q, want from_env", cfg.Source.Slot)
	}
	if strings.Join(cfg.Kafka.Brokers, ",") != "a:9092,b:9092" {
		t.Errorf("kafka.brokers: got %v, want [a:9092 b:9092]", cfg.Kafka.Brokers)
	}
	if cfg.Source.StatusInterval != 250*time.Millisecond {
		t.Errorf("source.status_interval: got %v, want 250ms", cfg.Source.StatusInterval)
	}
	if cfg.DataDir != "/var/lib/replicator" {
		t.Errorf("data_dir: got %q, want the flag's /var/lib/replicator", cfg.DataDir)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every substring must appear in the error
	}{
		{"unknown top-level key", minimal + "bogus: 1\n", []string{"unknown config key bogus"}},
		{"unknown nested key", "source:\n  url: x\n  slott: y\nentities: [{table: t}]\n", []string{"unknown config key source.slott"}},
		{"unknown entity key", "source: {url: x}\nentities:\n  - table: t\n    colums: [a]\n", []string{"entities[0].colums"}},
		{"missing url and entities", "data_dir: x\n", []string{"source.url: required", "entities: at least one entity"}},
		{"bad values reported together", `
source:
  url: postgres://x
  slot: Bad-Slot
  snapshot: sometimes
kafka:
  compression: brotli
  partitions: 0
entities:
  - table: t
`, []string{"source.slot", "source.snapshot", "kafka.compression", "kafka.partitions"}},
		{"snapshot settings out of range", `
source:
  url: postgres://x
  snapshot_workers: 0
  snapshot_chunk_rows: 10
  snapshot_progress_interval: 1ms
  snapshot_gc_percent: -1
entities: [{table: t}]
`, []string{"source.snapshot_workers", "source.snapshot_chunk_rows", "source.snapshot_progress_interval", "source.snapshot_gc_percent"}},
		{"sink gc_percent out of range", `
source: {url: postgres://x}
sink: {gc_percent: 1001}
entities: [{table: t}]
`, []string{"sink.gc_percent: 1001 must be between 0 and 1000"}},
		{"entity problems", `
source: {url: postgres://x}
entities:
  - table: a
  - table: public.a
  - table: b
    topic: "bad topic"
    key: [id, id]
  - name: c
`, []string{"entities[1].table", "already exported", "entities[2].topic", "entities[2].key", "listed twice", "entities[3].table: required"}},
		{"bad truncate and compatibility", `
source: {url: postgres://x}
entities:
  - table: a
    on_truncate: ignore
    compatibility: FULL_TRANSITIVE
`, []string{"entities[0].on_truncate", `"ignore"`, "tombstone, fail", "entities[0].compatibility", "full, backward, none"}},
		{"bad duration", "source:\n  url: x\n  status_interval: soon\nentities: [{table: t}]\n", []string{"status_interval"}},
		{"bad reconnect backoff", "source:\n  url: x\n  reconnect:\n    initial_backoff: 0s\n    give_up_after: -1s\nentities: [{table: t}]\n",
			[]string{"source.reconnect.initial_backoff", "source.reconnect.give_up_after"}},
		{"reconnect max below initial", "source:\n  url: x\n  reconnect: {initial_backoff: 5s, max_backoff: 1s}\nentities: [{table: t}]\n",
			[]string{"source.reconnect.max_backoff: 1s is below source.reconnect.initial_backoff"}},
		{"unknown reconnect key", "source:\n  url: x\n  reconnect: {max_wait: 1s}\nentities: [{table: t}]\n", []string{"unknown config key source.reconnect.max_wait"}},
		{"max message bytes too small", "source: {url: x}\nkafka: {max_message_bytes: 100}\nentities: [{table: t}]\n",
			[]string{"kafka.max_message_bytes: 100 is not between 1024 and 67108864"}},
		{"max message bytes too large", "source: {url: x}\nkafka: {max_message_bytes: 1000000000}\nentities: [{table: t}]\n",
			[]string{"kafka.max_message_bytes: 1000000000 is not between", "Kafka's default is 1048588"}},
		{"missing file", "", []string{"does not exist"}},
		{"embedded broker and metrics on one address", minimal + "kafka: {listen: '127.0.0.1:40000'}\nmetrics: {listen: 'localhost:40000'}\n",
			[]string{"metrics.listen: localhost:40000 is the address of kafka.listen (127.0.0.1:40000) too"}},
		{"embedded registry on every interface and broker on its port", minimal + "kafka: {listen: '127.0.0.1:40001'}\nregistry: {listen: ':40001', username: u, password: p}\n",
			[]string{"registry.listen: :40001 is the address of kafka.listen (127.0.0.1:40001) too"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "missing.yaml")
			if tt.yaml != "" {
				path = writeConfig(t, tt.yaml)
			}
			_, err := Load(path, nil)
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://u:secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgresql://u:secret@h:5433/db", "postgresql://u:xxxxx@h:5433/db"},
		{"postgres://u@h/db?password=secret&sslmode=require", "postgres://u@h/db?password=xxxxx&sslmode=require"},
		{"postgres://u@h/db?sslpassword=secret&sslkey=/k.pem", "postgres://u@h/db?sslkey=%2Fk.pem&sslpassword=xxxxx"},
		{"postgres://u@h/db?pass%77ord=secret", "postgres://u@h/db?password=xxxxx"},
		{"postgres://u@h/db?password=a&password=secret", "postgres://u@h/db?password=xxxxx"},
		{"postgres://u:p%40ss%2Fword@h/db", "postgres://u:xxxxx@h/db"},
		{"host=h user=u password=secret dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password='se cret' dbname=d", "host=h password=xxxxx dbname=d"},
		{`host=h password='it\'s secret' sslpassword = secret dbname=d`, "host=h password=xxxxx sslpassword=xxxxx dbname=d"},
		{`host=h password=sec\ ret`, "host=h password=xxxxx"},
		{"host=h application_name='my app'", "host=h application_name='my app'"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		// Unparsable: never shown, whatever part the password is in.
		{"postgres://u:p@ss/word@h/db", "(source.url does not parse: not shown)"},
		{"postgres://u:secret@h:port/db", "(source.url does not parse: not shown)"},
		{"host=h password='secret", "(source.url does not parse: not shown)"},
		{"secret", "(source.url does not parse: not shown)"},
	}
	for _, tt := range tests {
		got := RedactSourceURL(tt.in)
		if got != tt.want {
			t.Errorf("RedactSourceURL(%q): got %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "secret") || strings.Contains(got, "p@ss") {
			t.Errorf("RedactSourceURL(%q) leaks: %q", tt.in, got)
		}
	}
	reg := []struct{ in, want string }{
		{"https://u:secret@reg:8081", "https://u:xxxxx@reg:8081"},
		{"http://reg:8081/?token=secret&x=1", "http://reg:8081/?token=xxxxx&x=1"},
		{"http://u:secret@reg:port", "(registry.url does not parse: not shown)"},
		{"http://u:sec%zzret@reg", "(registry.url does not parse: not shown)"},
	}
	for _, tt := range reg {
		if got := RedactRegistryURL(tt.in); got != tt.want {
			t.Errorf("RedactRegistryURL(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
	cfg := Config{
		Source:   SourceConfig{URL: "postgres://u:topsecret@h/db?sslpassword=keysecret"},
		Kafka:    KafkaConfig{SASL: SASLConfig{Password: "alsosecret"}},
		Registry: RegistryConfig{URL: "http://u:regsecret@h:8081", Password: "basicsecret"},
	}
	for _, secret := range []string{"topsecret", "keysecret", "alsosecret", "regsecret", "basicsecret"} {
		if s := cfg.String(); strings.Contains(s, secret) {
			t.Errorf("Config.String leaks %s: %s", secret, s)
		}
	}
}

// TestValidateDoesNotQuoteSecrets: a registry.url that is not an http URL
// is refused without printing it.
func TestValidateDoesNotQuoteSecrets(t *testing.T) {
	_, err := Load(writeConfig(t, "source: {url: x}\nregistry: {url: 'ftp://u:regsecret@h'}\nentities: [{table: t}]\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "registry.url") {
		t.Fatalf("got %v, want a registry.url error", err)
	}
	if strings.Contains(err.Error(), "regsecret") {
		t.Errorf("error leaks the password: %v", err)
	}
	_, err = Load(writeConfig(t, "source: {url: 'postgres://u:pg/secret@h/db?x=1@2'}\nentities: [{table: t}]\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "source.url: does not parse") {
		t.Fatalf("got %v, want a source.url parse error", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestSameListenAddr(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:9092", "127.0.0.1:9092", true},
		{"127.0.0.1:9092", "localhost:9092", true},
		{"0.0.0.0:9092", "127.0.0.1:9092", true},
		{":9092", "10.0.0.5:9092", true},
		{"[::]:9092", "127.0.0.1:9092", true},
		{"127.0.0.1:9092", "127.0.0.1:9093", false},
		{"127.0.0.1:9092", "127.0.0.2:9092", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{"host-a:1", "host-b:1", false},
		{"no-port", "no-port", false},
	} {
		if got := sameListenAddr(tt.a, tt.b); got != tt.want {
			t.Errorf("sameListenAddr(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestEmptySectionsKeepDefaults: a section whose keys are all commented
// out (`kafka:` alone, null in YAML) is a known key keeping its defaults,
// not "unknown config key kafka".
func TestEmptySectionsKeepDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, minimal+"kafka:\n#  brokers: [k:9092]\nlog:\nmetrics:\n"), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Kafka.Listen != "127.0.0.1:9092" || cfg.Log.Level != "info" || cfg.Metrics.StallTimeout != time.Minute {
		t.Errorf("empty sections lost their defaults: kafka.listen %q, log.level %q, metrics.stall_timeout %v", cfg.Kafka.Listen, cfg.Log.Level, cfg.Metrics.StallTimeout)
	}
	if _, err := Load(writeConfig(t, minimal+"metrics: 5\n"), nil); err == nil || !strings.Contains(err.Error(), "metrics: expected a map") {
		t.Errorf("metrics: 5: got %v, want an error saying metrics wants a mapping", err)
	}
}
