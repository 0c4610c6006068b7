package config

import (
	"strings"
	"testing"
	"time"
)

func TestOpsKeys(t *testing.T) {
	t.Parallel()
	cfg, err := Load(writeConfig(t, minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Listen != "" || cfg.Metrics.StallTimeout != time.Minute || cfg.Metrics.SlotPollInterval != 10*time.Second || cfg.Log.StatsInterval != time.Minute {
		t.Errorf("defaults: got metrics %+v, log.stats_interval %v; want off, 60s, 10s and 1m", cfg.Metrics, cfg.Log.StatsInterval)
	}
	cfg, err = Load(writeConfig(t, minimal+"metrics: {listen: '127.0.0.1:9187', stall_timeout: 2m, slot_poll_interval: 5s}\nlog: {stats_interval: 0s}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Listen != "127.0.0.1:9187" || cfg.Metrics.StallTimeout != 2*time.Minute || cfg.Metrics.SlotPollInterval != 5*time.Second || cfg.Log.StatsInterval != 0 {
		t.Errorf("set: got metrics %+v, log.stats_interval %v", cfg.Metrics, cfg.Log.StatsInterval)
	}
	for _, tt := range []struct{ yaml, key string }{
		{"metrics: {listen: 9187}\n", KeyMetricsListen},
		// host:port by its syntax, yet no listener can bind it.
		{"metrics: {listen: '127.0.0.1:99999'}\n", KeyMetricsListen},
		{"metrics: {listen: '127.0.0.1:no-such-service'}\n", KeyMetricsListen},
		{"kafka: {listen: '127.0.0.1:65536'}\n", KeyKafkaListen},
		{"kafka: {brokers: ['127.0.0.1:-1']}\n", KeyKafkaBrokers},
		{"registry: {listen: 'localhost:80808'}\n", KeyRegistryListen},
		// Refused by the registry client only when run or check built it.
		{"registry: {url: 'http://u:pw@127.0.0.1:8081'}\n", KeyRegistryURL},
		{"registry: {url: 'http://127.0.0.1:8081', password: pw}\n", KeyRegistryUser},
		{"metrics: {stall_timeout: 100ms}\n", KeyMetricsStallTimeout},
		{"metrics: {slot_poll_interval: 10ms}\n", KeyMetricsSlotPoll},
		{"log: {stats_interval: 10ms}\n", KeyLogStatsInterval},
	} {
		_, err := Load(writeConfig(t, minimal+tt.yaml), nil)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%q: got %v, want an error naming %s", tt.yaml, err, tt.key)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("%q: the error shows the password: %v", tt.yaml, err)
		}
	}
}
