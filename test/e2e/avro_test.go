//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// readTopicGoavro is readTopic with goavro, an Avro implementation
// independent of the hamba/avro the replicator is built with, so both the
// writer's bytes and its schemas are checked.
func readTopicGoavro(t *testing.T, brokers, registryURL, topic string) []topicRecord {
	t.Helper()
	return readTopicWith(t, brokers, registryURL, topic, func(schema string) (func([]byte) (map[string]any, error), error) {
		c, err := goavro.NewCodecWithOptions(schema, &goavro.CodecOption{EnableDecimalBinarySpecCompliantEncoding: true})
		if err != nil {
			return nil, fmt.Errorf("goavro: %w", err)
		}
		return func(b []byte) (map[string]any, error) {
			native, rest, err := c.NativeFromBinary(b)
			if err != nil {
				return nil, fmt.Errorf("goavro: %w", err)
			}
			if len(rest) != 0 {
				return nil, fmt.Errorf("goavro left %d bytes after the record", len(rest))
			}
			m, ok := native.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("goavro decoded the record as %T", native)
			}
			return m, nil
		}, nil
	})
}

// unwrapUnion returns the value inside goavro's union wrapper
// (map[type name]value), or v itself.
func unwrapUnion(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, inner := range m {
			return inner
		}
	}
	return v
}

// e2eEnv is one replicator deployment for a test: its data directory, the
// embedded broker and registry addresses and the config file.
type e2eEnv struct {
	dataDir, brokerAddr, registryAddr, cfgPath string
	slot                                       string // slot and publication name
}

func newEnv(t *testing.T) *e2eEnv {
	t.Helper()
	dir := t.TempDir()
	return &e2eEnv{dataDir: dir, brokerAddr: freeAddr(t), registryAddr: freeAddr(t), cfgPath: filepath.Join(dir, "replicator.yaml")}
}

func (e *e2eEnv) registryURL() string { return "http://" + e.registryAddr }

// writeConfig writes the config file: the common part with slot and
// publication named slot, then entities (YAML list items, indented by two
// spaces).
func (e *e2eEnv) writeConfig(t *testing.T, dsn, slot, entities string) {
	t.Helper()
	e.slot = slot
	cfg := fmt.Sprintf(`data_dir: %q
source:
  url: %q
  slot: %s
  publication: %s
  status_interval: 100ms
kafka:
  listen: %q
  partitions: 2
registry:
  listen: %q
entities:
%s`, filepath.Join(e.dataDir, "data"), dsn, slot, slot, e.brokerAddr, e.registryAddr, entities)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}
