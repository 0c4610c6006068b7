package registry

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/replicator/replicator/filelock"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// DefaultEmbeddedListen is the embedded registry's address when
// [EmbeddedConfig.Listen] is empty: Confluent's default port, loopback only.
const DefaultEmbeddedListen = "127.0.0.1:8081"

// keyListen is the configuration key named in listen errors.
const keyListen = "registry.listen"

// maxBody caps a registration request, as srfake does.
const maxBody = 1 << 20

// EmbeddedConfig configures [StartEmbedded].
type EmbeddedConfig struct {
	// Listen is the host:port to serve on. Default [DefaultEmbeddedListen];
	// port 0 picks a free port (see [Embedded.URL]).
	Listen string
	// DataDir holds schemas.jsonl, the append-only log of registrations
	// that keeps subjects, versions and schema ids stable across restarts.
	// Empty keeps everything in memory. One process at a time: a second
	// registry on the same directory fails to start.
	DataDir string
	// Username and Password, when set, are required of every request
	// (HTTP basic auth). Required when Listen is not a loopback address.
	Username, Password string
	// CertFile and KeyFile, when set, are the PEM certificate and key the
	// registry serves HTTPS with ([Embedded.URL] is then https://).
	CertFile, KeyFile string
	// Topic, when set, is where registrations are kept on the broker
	// (see [TopicLog]): replayed before serving, appended to before a
	// registration is answered; DataDir is then a cache. The registry
	// closes it.
	Topic *TopicLog
}

// Embedded is a Confluent-compatible schema registry served from this
// process: franz-go's srfake on our own listener, plus persistence.
//
// Registrations (POST /subjects/{subject}/versions) are made durable before
// they are answered: the new version's line is appended to the log and
// fsynced, then {"id": N} is returned as Confluent does. Everything else is
// srfake's, with these limits:
//   - compatibility checks always answer is_compatible=true (srfake does
//     not evaluate them);
//   - deletes are refused (HTTP 422, error code 42205): the log is
//     append-only, so a deleted version would come back at restart;
//   - config and mode changes (PUT /config, /mode) last until restart.
//
// Its methods are safe for concurrent use.
type Embedded struct {
	reg *srfake.Registry
	srv *http.Server
	url string
	api *http.ServeMux // the routes we take over from srfake
	// served is closed when the Serve goroutine has returned.
	served   chan struct{}
	serveErr error // written before served is closed

	mu        sync.Mutex // serializes registrations; protects the fields below
	log       *os.File   // the schema log, nil in memory mode
	size      int64      // bytes of complete records in log
	persisted map[subjectVersion]bool
	local     []logRecord // the log's versions as replayed at start, in order
	topic     *TopicLog   // nil: data_dir only
	broken    error       // set once persisting failed or the log is closed; registrations then fail

	truncated *Truncation
}

// StartEmbedded replays the schema log (when DataDir is set), starts
// serving and returns. The server runs until [Embedded.Close].
//
// The log is replayed in order with the same subjects, versions and ids, so
// a restarted registry answers exactly as before and hands out fresh ids
// after the highest one seen. A torn last line, left by a crash in the
// middle of an unacknowledged registration, is cut off and reported by
// [Embedded.Truncated]; any other corrupt line fails the start.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (_ *Embedded, err error) {
	if cfg.Topic != nil {
		defer func() {
			if err != nil {
				cfg.Topic.Close() // ours from now on, even when the start fails
			}
		}()
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultEmbeddedListen
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("%s %q: %w", keyListen, cfg.Listen, err)
	}
	if err := checkAuth(cfg); err != nil {
		return nil, fmt.Errorf("embedded registry: %w", err)
	}
	tlsConfig, err := serverTLS(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded registry: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	e := &Embedded{
		reg:       srfake.NewRegistry(),
		persisted: make(map[subjectVersion]bool),
		served:    make(chan struct{}),
	}
	if cfg.DataDir != "" {
		if err := e.openLog(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if cfg.Topic != nil {
		e.topic = cfg.Topic
		if err := e.syncTopic(ctx, cfg.Topic); err != nil {
			e.closeLog()
			return nil, err
		}
	}

	e.api = http.NewServeMux()
	for _, prefix := range []string{"", "/contexts/{context}"} {
		e.api.HandleFunc("POST "+prefix+"/subjects/{subject}/versions", e.handleRegister)
		e.api.HandleFunc("DELETE "+prefix+"/subjects/{subject}", handleRefuseDelete)
		e.api.HandleFunc("DELETE "+prefix+"/subjects/{subject}/versions/{version}", handleRefuseDelete)
	}
	// Interceptors run before srfake's own middleware (context prefixes,
	// auth), which is why the context-prefixed routes are listed above and
	// why this registry must not be given srfake.WithAuth.
	e.reg.Intercept(e.intercept)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		e.closeLog()
		return nil, fmt.Errorf("%s %s: %w", keyListen, cfg.Listen, err)
	}
	e.url = "http://" + dialAddr(cfg.Listen, ln.Addr())
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
		e.url = "https://" + dialAddr(cfg.Listen, ln.Addr())
	}
	e.srv = &http.Server{
		Handler:           requireBasicAuth(e.reg.Handler(), cfg.Username, cfg.Password),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		defer close(e.served)
		if err := e.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			e.serveErr = err
		}
	}()
	return e, nil
}

// openLog opens (creating) and locks the schema log, replays it into the
// registry and cuts a torn last line.
func (e *Embedded) openLog(dir string) (err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("registry data dir: %w", err)
	}
	path := filepath.Join(dir, logFile)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("registry schema log: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := filelock.Lock(f); err != nil {
		return fmt.Errorf("registry data dir %s: %w", dir, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// Make the new file's directory entry durable too.
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("registry data dir: %w", err)
		}
	}
	r, err := replayLog(f, e.reg)
	if err != nil {
		return err
	}
	if r.truncated != nil {
		if err := f.Truncate(r.size); err != nil {
			return fmt.Errorf("registry schema log: cut torn record: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("registry schema log: %w", err)
		}
	}
	e.log, e.size, e.persisted, e.truncated, e.local = f, r.size, r.persisted, r.truncated, r.records
	return nil
}

// URL is the registry's base URL, e.g. http://127.0.0.1:8081. With port 0
// it holds the port picked; a wildcard host is replaced by loopback.
func (e *Embedded) URL() string { return e.url }

// Truncated reports the torn record cut from the schema log at start-up,
// or nil. It is a warning for the caller to log.
func (e *Embedded) Truncated() *Truncation { return e.truncated }

// Close shuts the registry down in two phases: it stops accepting
// connections and waits for in-flight requests (a registration being
// fsynced finishes and is answered); if ctx ends first, the remaining
// connections are closed. Then the schema log is closed, releasing the
// data directory.
func (e *Embedded) Close(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, e.srv.Close())
	}
	<-e.served
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(err, e.serveErr, e.closeLog())
}

// closeLog closes the schema log and topic, if open. Callers hold e.mu
// or own e.
func (e *Embedded) closeLog() error {
	if e.topic != nil {
		e.topic.Close()
		e.topic = nil
	}
	if e.log == nil {
		return nil
	}
	err := e.log.Close()
	e.log = nil
	if e.broken == nil {
		e.broken = errors.New("registry closed")
	}
	return err
}

// intercept serves the routes in e.api and leaves the rest to srfake.
func (e *Embedded) intercept(w http.ResponseWriter, r *http.Request) bool {
	if _, pattern := e.api.Handler(r); pattern == "" {
		return false
	}
	e.api.ServeHTTP(w, r)
	return true
}

// handleRegister is POST /subjects/{subject}/versions: srfake's
// registration, made durable before the answer. Bad input is answered the
// way srfake answers it (HTTP 422, error code 42201): every error srfake's
// RegisterSchema returns is of that kind except for a soft-deleted subject,
// which cannot exist here because deletes are refused.
func (e *Embedded) handleRegister(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	subject := r.PathValue("subject")
	var s sr.Schema
	if err := decodeOne(r.Body, &s); err != nil {
		writeError(w, http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, err.Error())
		return
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.broken != nil {
		writeError(w, http.StatusInternalServerError, sr.ErrStoreError.Code, "schema log unusable: "+e.broken.Error())
		return
	}
	id, version, err := e.reg.RegisterSchema(subject, s)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, sr.ErrInvalidSchema.Code, err.Error())
		return
	}
	rec := logRecord{Subject: subject, Version: version, ID: id, Schema: s}
	if e.log != nil && !e.persisted[subjectVersion{subject, version}] {
		if err := e.appendRecord(rec); err != nil {
			writeError(w, http.StatusInternalServerError, sr.ErrStoreError.Code, "persist schema: "+err.Error())
			return
		}
	}
	if e.topic != nil && !e.topic.has(subjectVersion{subject, version}) {
		// Not canceled with the request: a client giving up must not
		// leave the registry read-only.
		if err := e.topic.append(context.WithoutCancel(r.Context()), rec); err != nil {
			e.broken = fmt.Errorf("schemas topic write failed, restart the registry: %w", err)
			writeError(w, http.StatusInternalServerError, sr.ErrStoreError.Code, "persist schema: "+e.broken.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]int{"id": id})
}

// appendRecord writes one line and fsyncs it. Any failure makes the log
// read-only until restart (fail-stop): the registration is already in
// srfake's memory, and answering later registrations from a memory that
// differs from the log could hand out ids that a restart forgets. A failed
// write is cut back to the last complete record so that the log still
// replays; after a failed fsync nothing written since the last good one can
// be trusted (the kernel may have dropped the pages), and the next start
// treats a damaged tail as torn. Callers hold e.mu.
func (e *Embedded) appendRecord(rec logRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if _, err := e.log.Write(line); err != nil {
		if terr := e.log.Truncate(e.size); terr != nil {
			err = fmt.Errorf("%w (and cutting the partial record failed: %w)", err, terr)
		}
		e.broken = fmt.Errorf("write failed, restart the registry: %w", err)
		return e.broken
	}
	if err := e.log.Sync(); err != nil {
		e.broken = fmt.Errorf("fsync failed, restart the registry: %w", err)
		return e.broken
	}
	e.size += int64(len(line))
	e.persisted[subjectVersion{rec.Subject, rec.Version}] = true
	return nil
}

// handleRefuseDelete answers the delete routes like Confluent answers an
// operation its mode forbids.
func handleRefuseDelete(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusUnprocessableEntity, sr.ErrOperationNotPermitted.Code,
		"the embedded registry does not delete schemas: its log is append-only, so a deleted version would come back at restart")
}

// decodeOne decodes exactly one JSON object with no unknown fields, as
// srfake does for request bodies.
func decodeOne(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if err := dec.Decode(&json.RawMessage{}); err != io.EOF {
		return errors.New("request body must contain only a single JSON object")
	}
	return nil
}

// writeJSON answers with the registry's media type, like srfake.
func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// writeError answers with Confluent's error body.
func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{"error_code": code, "message": msg})
}

// dialAddr is the address a local client dials for a server configured
// with listen and bound at bound: the configured host with the bound port,
// a wildcard host replaced by loopback.
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

// syncDir fsyncs a directory so that a file created in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
