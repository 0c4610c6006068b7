package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadRejectsBadScalars covers values weak typing used to accept or
// misread, each refused with its key.
func TestLoadRejectsBadScalars(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"negative linger", "kafka: {linger: -5ms}\n", []string{"kafka.linger: -5ms must be between 0s and 10s"}},
		{"duration without unit", "source: {status_interval: 10}\n", []string{"source.status_interval", "10 has no unit", "10s"}},
		{"duration string without unit", "source: {status_interval: '10'}\n", []string{"source.status_interval", "has no unit"}},
		{"status interval too small", "source: {status_interval: 1ms}\n", []string{"source.status_interval: 1ms must be between 100ms and 10m0s"}},
		{"status interval too large", "source: {status_interval: 100000h}\n", []string{"source.status_interval"}},
		{"huge partitions", "kafka: {partitions: 99999999999}\n", []string{"kafka.partitions: 99999999999 must be between 1 and 10000"}},
		{"partitions wrapping int32", "kafka: {partitions: 4294967297}\n", []string{"kafka.partitions: 4294967297 must be between"}},
		{"partitions beyond int64", "kafka: {partitions: 99999999999999999999999}\n", []string{"kafka.partitions", "too large"}},
		{"zero partitions", "kafka: {partitions: 0}\n", []string{"kafka.partitions: 0 must be between"}},
		{"empty partitions", "kafka: {partitions: ''}\n", []string{"kafka.partitions: is empty"}},
		{"fractional partitions", "kafka: {partitions: 1.5}\n", []string{"kafka.partitions: 1.5 is not a whole number"}},
		{"word partitions", "kafka: {partitions: many}\n", []string{"kafka.partitions: \"many\" is not a whole number"}},
		{"boolean partitions", "kafka: {partitions: true}\n", []string{"kafka.partitions: want a whole number, got a boolean"}},
		{"entity zero partitions", "", []string{"entities[0].partitions: 0 must be between"}},
		{"entity huge partitions", "", []string{"entities[0].partitions: 20000 must be between"}},
		{"replication factor", "kafka: {replication_factor: 65537}\n", []string{"kafka.replication_factor: 65537"}},
		{"max buffered", "kafka: {max_buffered_records: 1e12}\n", []string{"kafka.max_buffered_records"}},
		{"tls enabled word", "kafka: {tls: {enabled: maybe}}\n", []string{"kafka.tls.enabled: \"maybe\" is not true or false"}},
		{"url as a mapping", "", []string{"source.url: want a string, got a mapping"}},
		{"give up too short", "source: {reconnect: {give_up_after: 1ns}}\n", []string{"source.reconnect.give_up_after"}},
		{"open broker", "kafka: {listen: '0.0.0.0:9092'}\n", []string{"kafka.listen: 0.0.0.0:9092 is not a loopback address", "kafka.sasl.mechanism", "kafka.sasl.password"}},
		{"open broker with PLAIN", "kafka: {listen: '10.1.2.3:9092', sasl: {mechanism: PLAIN, username: u, password: p}}\n", []string{"kafka.sasl.mechanism: PLAIN with kafka.listen 10.1.2.3:9092 would send the password in clear"}},
		{"sasl without password", "kafka: {brokers: ['k:9092'], sasl: {mechanism: SCRAM-SHA-256, username: u}}\n", []string{"kafka.sasl.password: required"}},
		{"open registry", "registry: {listen: ':8081'}\n", []string{"registry.listen: :8081 is not a loopback address", "registry.username", "registry.password"}},
		{"registry user without password", "registry: {username: u}\n", []string{"registry.username: registry.username and registry.password: set both or neither"}},
		{"registry cert without key", "registry: {cert_file: c.pem}\n", []string{"registry.cert_file: registry.cert_file and registry.key_file: set both or neither"}},
		{"registry cert with external registry", "registry: {url: 'https://r:8081', cert_file: c.pem, key_file: k.pem}\n", []string{"registry.cert_file", "not used with registry.url"}},
		{"embedded TLS without key", "kafka: {tls: {enabled: true, cert_file: c.pem}}\n", []string{"kafka.tls.enabled: the embedded broker serves TLS with kafka.tls.cert_file and kafka.tls.key_file: set both"}},
		{"numeric password", "kafka: {brokers: ['k:9092'], sasl: {mechanism: PLAIN, username: u, password: 0123}}\n", []string{"kafka.sasl.password: want a string, got a number: quote it"}},
		{"numeric column name", "", []string{"entities[0].key[0]: want a string, got a number"}},
		{"stall timeout huge", "metrics: {stall_timeout: 1000h}\n", []string{"metrics.stall_timeout: 1000h0m0s is above the maximum of 24h0m0s"}},
		{"slot poll without unit", "metrics: {slot_poll_interval: 10}\n", []string{"metrics.slot_poll_interval", "has no unit"}},
		{"max backoff huge", "source: {reconnect: {max_backoff: 1000h}}\n", []string{"source.reconnect.max_backoff: 1000h0m0s must be between"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "source: {url: postgres://x}\nentities: [{table: t}]\n" + tt.yaml
			switch tt.name {
			case "entity zero partitions":
				yaml = "source: {url: postgres://x}\nentities: [{table: t, partitions: 0}]\n"
			case "numeric column name":
				yaml = "source: {url: postgres://x}\nentities: [{table: t, key: [1]}]\n"
			case "url as a mapping":
				yaml = "source: {url: {a: b}}\nentities: [{table: t}]\n"
			case "entity huge partitions":
				yaml = "source: {url: postgres://x}\nentities: [{table: t, partitions: 20000}]\n"
			}
			// A later mapping of the same top-level key replaces the
			// first; merge by writing source: once.
			yaml = mergeSource(yaml)
			_, err := Load(writeConfig(t, yaml), nil)
			if err == nil {
				t.Fatalf("got no error for\n%s", yaml)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// mergeSource folds a second "source: {...}" line into the first.
func mergeSource(yaml string) string {
	lines := strings.Split(strings.TrimSpace(yaml), "\n")
	var extra []string
	var out []string
	for i, l := range lines {
		if i > 0 && strings.HasPrefix(l, "source: {") {
			extra = append(extra, strings.TrimSuffix(strings.TrimPrefix(l, "source: {"), "}"))
			continue
		}
		out = append(out, l)
	}
	if len(extra) > 0 {
		out[0] = strings.TrimSuffix(out[0], "}") + ", " + strings.Join(extra, ", ") + "}"
	}
	return strings.Join(out, "\n") + "\n"
}

// TestLoadAcceptsTypedScalars: strict typing still reads what users write,
// from YAML and from the environment (where everything is a string).
func TestLoadAcceptsTypedScalars(t *testing.T) {
	t.Setenv("REPLICATOR_KAFKA_PARTITIONS", " 12 ")
	t.Setenv("REPLICATOR_KAFKA_TLS_ENABLED", "true")
	t.Setenv("REPLICATOR_KAFKA_LINGER", "0")
	cfg, err := Load(writeConfig(t, `
source: {url: postgres://x, status_interval: 1m30s, reconnect: {give_up_after: 0}}
kafka: {client_id: '123', replication_factor: 3, tls: {cert_file: c.pem, key_file: k.pem}}
entities: [{table: t, key: ['1', id], partitions: 3.0}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"kafka.partitions from env", cfg.Kafka.Partitions, 12},
		{"kafka.tls.enabled from env", cfg.Kafka.TLS.Enabled, true},
		{"kafka.linger 0 from env", cfg.Kafka.Linger, time.Duration(0)},
		{"status_interval", cfg.Source.StatusInterval, 90 * time.Second},
		{"give_up_after 0", cfg.Source.Reconnect.GiveUpAfter, time.Duration(0)},
		{"client_id number", cfg.Kafka.ClientID, "123"},
		{"replication_factor", cfg.Kafka.ReplicationFactor, 3},
		{"key number", strings.Join(cfg.Entities[0].Key, ","), "1,id"},
		{"entity partitions 3.0", cfg.Entities[0].Partitions, 3},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestOpenListenWithCredentials: the embedded services may listen on the
// network once they require credentials.
func TestOpenListenWithCredentials(t *testing.T) {
	t.Setenv("REPLICATOR_KAFKA_SASL_PASSWORD", "from-env")
	t.Setenv("REPLICATOR_REGISTRY_PASSWORD", "from-env")
	cfg, err := Load(writeConfig(t, `
source: {url: postgres://x}
kafka: {listen: '0.0.0.0:9092', sasl: {mechanism: SCRAM-SHA-512, username: replicator}}
registry: {listen: '[::]:8081', username: replicator}
entities: [{table: t}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(writeConfig(t, `
source: {url: postgres://x}
kafka: {listen: '0.0.0.0:9092', sasl: {mechanism: PLAIN, username: replicator}, tls: {enabled: true, cert_file: c.pem, key_file: k.pem}}
registry: {username: replicator}
entities: [{table: t}]
`), nil); err != nil {
		t.Errorf("PLAIN over TLS on the network: %v", err)
	}
	if cfg.Kafka.SASL.Password != "from-env" || cfg.Registry.Password != "from-env" {
		t.Errorf("passwords from the environment: got %q, %q", cfg.Kafka.SASL.Password, cfg.Registry.Password)
	}
	if s := cfg.String(); strings.Contains(s, "from-env") {
		t.Errorf("String leaks a password: %s", s)
	}
}

func TestLoadRefusesOddFiles(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{"/dev/zero", "/dev/zero is not a regular file"},
		{dir, "is not a regular file"},
		{big, "more than the 4194304 a config may have"},
	}
	for _, tt := range tests {
		done := make(chan error, 1)
		go func() { _, err := Load(tt.path, nil); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%s): got %v, want an error with %q", tt.path, err, tt.want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Load(%s) still reading after 30s", tt.path)
		}
	}
}
