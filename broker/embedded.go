package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Embedded broker defaults applied by [StartEmbedded] to zero fields (and
// [DefaultCompactionMinDirtyBytes]).
const (
	DefaultEmbeddedListen     = "127.0.0.1:9092"
	DefaultCompactionInterval = 30 * time.Second
)

// compactionConfig is the kfake broker config that sets how often its own
// cleaner runs (kfake's default is one hour).
const compactionConfig = "log.cleaner.backoff.ms"

// EmbeddedConfig configures [StartEmbedded].
type EmbeddedConfig struct {
	// Listen is the host:port the broker listens on and advertises in
	// metadata. Default [DefaultEmbeddedListen]; port 0 picks a free port
	// (see [Embedded.Addr]). A wildcard host (0.0.0.0, ::) accepts remote
	// connections but is also what metadata advertises, which only
	// clients on this machine can dial: give a routable address instead.
	Listen string
	// DataDir persists topics, records, producer IDs and group offsets
	// across restarts. Empty keeps everything in memory. One process at a
	// time: a second broker on the same directory fails to start.
	DataDir string
	// SyncWrites fsyncs every produced batch before acknowledging it.
	// Off by default, matching Kafka: an acknowledged batch has been
	// written to the OS (it survives kill -9 of this process, not a power
	// loss); segments are synced on roll and on Close.
	SyncWrites bool
	// CompactionInterval is how often the broker checks whether its
	// compacted topics are due for a compaction pass. Default
	// [DefaultCompactionInterval].
	CompactionInterval time.Duration
	// CompactionMinDirtyBytes: a pass is due once the compacted topics
	// have grown, since the last pass, by at least this many bytes and by
	// at least as much as that pass left. Default
	// [DefaultCompactionMinDirtyBytes], whose documentation says why a
	// pass is worth avoiding.
	CompactionMinDirtyBytes int64
	// SASL, when its Mechanism is set, makes every client authenticate as
	// its one user (a superuser). Required when Listen is not a loopback
	// address (SCRAM-SHA-256 or SCRAM-SHA-512 there, or PLAIN when the
	// broker serves TLS: without it PLAIN sends the password in clear).
	SASL SASLConfig
	// CertFile and KeyFile, when set, make the broker serve TLS only, with
	// this PEM certificate and key. [Embedded.DialContext] then speaks TLS
	// too, pinned to this certificate.
	CertFile, KeyFile string
	// Logger receives kfake's log lines when set: kfake errors and warnings
	// at their level, everything else (per-request chatter) at debug.
	// Nil discards them.
	Logger *slog.Logger
}

// Embedded is a single-node Kafka-protocol broker running in this process,
// built on franz-go's kfake: the real wire protocol, idempotent and
// transactional produce, consumer groups, compaction and on-disk
// persistence. Any Kafka client can talk to it. Its methods are safe for
// concurrent use.
type Embedded struct {
	cluster *kfake.Cluster
	addr    string
	ln      *inProcessListener
	// clientTLS is the TLS configuration of in-process connections when
	// the broker serves TLS; nil otherwise.
	clientTLS *tls.Config
	unlock    func() error // releases the DataDir lock; nil without DataDir or once released

	compactor *compactor
	reaper    *reaper
	// The compactor and the reaper run until stop; Close waits for them
	// (background) before closing the cluster, whose methods block
	// forever once closed.
	stop       context.CancelFunc
	background sync.WaitGroup

	closeOnce sync.Once
}

// StartEmbedded starts the broker and returns once it accepts connections.
//
// With a DataDir written by an earlier run (closed cleanly or killed), kfake
// reloads it: topics with their configs and IDs, every record batch whose
// segment write completed, committed offsets and idempotent producer state.
// The broker listens on exactly the configured host and port; a port in
// use fails with an error naming the address and the kafka.listen key.
// Automatic topic creation is off: topics come from [EnsureTopics].
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultEmbeddedListen
	}
	if cfg.CompactionInterval == 0 {
		cfg.CompactionInterval = DefaultCompactionInterval
	}
	if cfg.CompactionInterval < time.Millisecond {
		return nil, fmt.Errorf("embedded broker: compaction interval %v: want at least 1ms", cfg.CompactionInterval)
	}
	if cfg.CompactionMinDirtyBytes == 0 {
		cfg.CompactionMinDirtyBytes = DefaultCompactionMinDirtyBytes
	}
	if cfg.CompactionMinDirtyBytes < 0 {
		return nil, fmt.Errorf("embedded broker: compaction min dirty bytes %d is negative", cfg.CompactionMinDirtyBytes)
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("%s %q: %w", keyListen, cfg.Listen, err)
	}
	tlsOpts, clientTLS, err := embeddedTLS(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	authOpts, clientAuth, err := embeddedAuth(cfg.Listen, cfg.SASL, clientTLS != nil)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}

	e := &Embedded{clientTLS: clientTLS}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("embedded broker data dir: %w", err)
		}
		unlock, err := lockDir(filepath.Join(cfg.DataDir, lockFileName))
		if err != nil {
			return nil, fmt.Errorf("embedded broker data dir %s: %w", cfg.DataDir, err)
		}
		e.unlock = unlock
	}

	// kfake always asks its ListenFn for 127.0.0.1:<port>; we bind the
	// configured address ourselves and hand that listener over instead, so
	// any host works and a bind error surfaces before any state is loaded.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		e.release()
		return nil, fmt.Errorf("%s %s: %w", keyListen, cfg.Listen, err)
	}
	e.ln = newInProcessListener(ln)
	var handed atomic.Bool
	listenFn := func(string, string) (net.Listener, error) {
		if handed.Swap(true) {
			return nil, errors.New("embedded broker: only one listener")
		}
		return e.ln, nil
	}

	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ListenFn(listenFn),
		// Our compactor decides when to compact, not kfake's ticker.
		kfake.BrokerConfigs(map[string]string{compactionConfig: strconv.FormatInt(kfakeCleanerOff.Milliseconds(), 10)}),
	}
	opts = append(opts, authOpts...)
	opts = append(opts, tlsOpts...)
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(slogAdapter{cfg.Logger}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		e.ln.Close()
		e.release()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	e.cluster = c
	e.addr = dialAddr(cfg.Listen, ln.Addr())

	clientOpts := append(clientAuth, kgo.Dialer(e.DialContext))
	// The compactor also covers topics reloaded from disk, for which kfake
	// would not start its own ticker.
	e.compactor = &compactor{
		cluster: c, addr: e.addr, interval: cfg.CompactionInterval,
		minDirty: cfg.CompactionMinDirtyBytes, log: cfg.Logger,
		clientOpts: clientOpts,
	}
	e.reaper = &reaper{
		interval: reapInterval, grace: reapGrace, addr: e.addr,
		clientOpts: clientOpts, log: cfg.Logger,
		members: map[memberKey]*heard{},
	}
	e.reaper.watch(c)
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.stop = cancel
	e.background.Go(func() { e.compactor.run(bctx) })
	e.background.Go(func() { e.reaper.run(bctx) })
	return e, nil
}

// Addr is the address clients should dial (seed broker). With port 0 it
// holds the port picked; a wildcard host is replaced by loopback.
func (e *Embedded) Addr() string { return e.addr }

// DialContext is a kgo dialer (kgo.Dialer) for a client in this process:
// the broker's own address is connected in memory, without the network;
// any other address is dialed over TCP.
func (e *Embedded) DialContext(ctx context.Context, network, host string) (net.Conn, error) {
	if host == e.addr || host == e.ln.Addr().String() {
		c, err := e.ln.dial(ctx)
		if err != nil || e.clientTLS == nil {
			return c, err
		}
		return tls.Client(c, e.clientTLS), nil
	}
	var d net.Dialer
	return d.DialContext(ctx, network, host)
}

// Cluster is the underlying kfake cluster, for tests and tooling: Compact
// to force a compaction pass, ControlKey to inject broker errors. Calling
// its methods after [Embedded.Close] blocks forever (kfake serves them on a
// loop that Close stops).
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the broker: it stops accepting connections, persists its
// state to the DataDir (kfake logs, but cannot return, a failure to do so)
// and then releases the DataDir. Safe to call more than once.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		// Order matters: the compactor calls the cluster, which blocks
		// forever once closed, and kfake must finish writing its state
		// before another process may take the directory.
		e.stop()
		e.background.Wait()
		e.cluster.Close()
		e.release()
	})
}

// release drops the DataDir lock, if held.
func (e *Embedded) release() {
	if e.unlock != nil {
		_ = e.unlock() // closing the lock file releases the lock even on error
		e.unlock = nil
	}
}

// dialAddr is the address a local client dials for a broker configured
// with listen and bound at bound: the configured host (the port bound, for
// port 0), with a wildcard host replaced by loopback. Go binds a wildcard
// "tcp" listen dual-stack, so bound alone cannot tell 0.0.0.0 from ::.
func dialAddr(listen string, bound net.Addr) string {
	host, _, _ := net.SplitHostPort(listen)
	_, port, _ := net.SplitHostPort(bound.String())
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// slogAdapter routes kfake's printf-style logs to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, msg string, args ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	}
	ctx := context.Background()
	if !a.l.Enabled(ctx, lvl) {
		return
	}
	a.l.Log(ctx, lvl, fmt.Sprintf(msg, args...), slog.String("component", "kfake"))
}
