package config

import (
	"fmt"
	"time"

	"github.com/spf13/viper"
)

// Keys of what an operator sees of a running replicator: metrics, health
// and the periodic stats log line.
const (
	KeyLogStatsInterval      = "log.stats_interval"
	KeyMetricsListen         = "metrics.listen"
	KeyMetricsStallTimeout   = "metrics.stall_timeout"
	KeyMetricsSlotPoll       = "metrics.slot_poll_interval"
	minStatsInterval         = time.Second
	minStallTimeout          = time.Second
	minSlotPollInterval      = time.Second
	defaultLogStatsInterval  = "1m"
	defaultStallTimeout      = "60s"
	defaultSlotPollInterval  = "10s"
	defaultMetricsListenHint = "127.0.0.1:9187"
	// maxOpsInterval bounds the intervals above: longer is a typo (a
	// missing unit read as hours), not a setting.
	maxOpsInterval = 24 * time.Hour
)

// MetricsConfig is the Prometheus and health listener.
type MetricsConfig struct {
	// Listen is the address of /metrics, /healthz and /readyz, e.g.
	// 127.0.0.1:9187. Default "" (off).
	Listen string `mapstructure:"listen"`
	// StallTimeout is how long the stream may make no progress while it
	// has work pending (records in flight and none acknowledged, or the
	// stream loop blocked handing one change over) before /healthz fails.
	// Default 60s.
	StallTimeout time.Duration `mapstructure:"stall_timeout"`
	// SlotPollInterval is how often pg_replication_slots is read for the
	// slot metrics, on a connection of its own. Default 10s, at least 1s.
	SlotPollInterval time.Duration `mapstructure:"slot_poll_interval"`
}

func setOpsDefaults(v *viper.Viper) {
	v.SetDefault(KeyLogStatsInterval, defaultLogStatsInterval)
	v.SetDefault(KeyMetricsListen, "")
	v.SetDefault(KeyMetricsStallTimeout, defaultStallTimeout)
	v.SetDefault(KeyMetricsSlotPoll, defaultSlotPollInterval)
}

func (c *Config) validateOps() []error {
	var errs []error
	if d := c.Log.StatsInterval; d != 0 && d < minStatsInterval {
		errs = append(errs, fmt.Errorf("%s: %v is below the minimum of %v (0 turns the line off; default %s)", KeyLogStatsInterval, d, minStatsInterval, defaultLogStatsInterval))
	} else if d > maxOpsInterval {
		errs = append(errs, fmt.Errorf("%s: %v is above the maximum of %v (0 turns the line off; default %s)", KeyLogStatsInterval, d, maxOpsInterval, defaultLogStatsInterval))
	}
	if c.Metrics.Listen != "" {
		if err := checkAddr(c.Metrics.Listen); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port, e.g. %s: %v", KeyMetricsListen, c.Metrics.Listen, defaultMetricsListenHint, err))
		}
	}
	if c.Metrics.StallTimeout < minStallTimeout {
		errs = append(errs, fmt.Errorf("%s: %v is below the minimum of %v (default %s)", KeyMetricsStallTimeout, c.Metrics.StallTimeout, minStallTimeout, defaultStallTimeout))
	} else if c.Metrics.StallTimeout > maxOpsInterval {
		errs = append(errs, fmt.Errorf("%s: %v is above the maximum of %v (default %s)", KeyMetricsStallTimeout, c.Metrics.StallTimeout, maxOpsInterval, defaultStallTimeout))
	}
	if c.Metrics.SlotPollInterval < minSlotPollInterval {
		errs = append(errs, fmt.Errorf("%s: %v is below the minimum of %v (default %s)", KeyMetricsSlotPoll, c.Metrics.SlotPollInterval, minSlotPollInterval, defaultSlotPollInterval))
	} else if c.Metrics.SlotPollInterval > maxOpsInterval {
		errs = append(errs, fmt.Errorf("%s: %v is above the maximum of %v (default %s)", KeyMetricsSlotPoll, c.Metrics.SlotPollInterval, maxOpsInterval, defaultSlotPollInterval))
	}
	return errs
}
