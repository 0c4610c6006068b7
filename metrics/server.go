package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors, and replicator_build_info.
func NewRegistry(version, commit, goVersion string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "replicator_build_info",
			Help:        "Always 1; the labels say which build is running.",
			ConstLabels: prometheus.Labels{"version": version, "commit": commit, "go_version": goVersion},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Server serves /metrics, /healthz and /readyz on one listener.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	health *Health
	log    *slog.Logger
	// shutdown bounds the wait for requests being served at stop
	// (shutdownTimeout; tests shorten it).
	shutdown time.Duration
}

// shutdownTimeout bounds the wait for requests being served at stop.
const shutdownTimeout = 5 * time.Second

// Listen binds addr (metrics.listen) now, so a taken port fails the start
// rather than surfacing later; Run serves.
func Listen(addr string, reg prometheus.Gatherer, health *Health, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{log}}))
	mux.HandleFunc("GET /healthz", probe(health.Alive))
	mux.HandleFunc("GET /readyz", probe(health.Ready))
	return &Server{
		ln:       ln,
		srv:      &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		health:   health,
		log:      log,
		shutdown: shutdownTimeout,
	}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts the listener down (requests being
// served get shutdownTimeout) and returns nil. It samples the health
// watchdogs meanwhile.
func (s *Server) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.health.Run(gctx) })
	g.Go(func() error {
		err := s.srv.Serve(s.ln)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve metrics on %s: %w", s.Addr(), err)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdown)
		defer cancel()
		if err := s.srv.Shutdown(sctx); err != nil {
			// A scrape still running (a slow collector, a client that
			// reads slowly) is cut: the process is stopping cleanly,
			// and a monitoring request must not make it exit non-zero.
			s.log.Warn("metrics server: requests still running at stop were closed", "addr", s.Addr(), "error", err)
			s.srv.Close()
		}
		return nil
	})
	return g.Wait()
}

// probe answers 200 "ok", or 503 with what is wrong.
func probe(check func(time.Time) error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := check(time.Now()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// slogErrorLog routes promhttp's errors to the logger.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Warn("serve metrics", "error", fmt.Sprint(v...)) }
