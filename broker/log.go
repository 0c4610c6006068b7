package broker

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ClientLogger routes the Kafka client's warnings and errors to l. Those
// are what an operator needs during a broker outage: while the producer
// retries (it never gives up on its own, see [ProducerConfig]) and the
// stream waits, every failed connection attempt is logged with the broker's
// address ("unable to open connection to broker"). kgo's info and debug
// lines (per request) are left out.
func ClientLogger(l *slog.Logger) kgo.Opt {
	return kgo.WithLogger(kgoLogger{l})
}

type kgoLogger struct{ l *slog.Logger }

func (kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelError
	case kgo.LogLevelWarn:
	default:
		return
	}
	k.l.Log(context.Background(), lvl, msg, append(keyvals, "component", "kafka-client")...)
}
