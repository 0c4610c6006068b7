package registry

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/replicator/replicator/listenaddr"
)

// checkAuth refuses to serve a non-loopback address without credentials:
// anyone on the network could otherwise register schemas under our
// subjects.
func checkAuth(cfg EmbeddedConfig) error {
	if (cfg.Username == "") != (cfg.Password == "") {
		return fmt.Errorf("%s and %s: set both or neither", keyUsername, keyPassword)
	}
	if cfg.Username == "" && !listenaddr.IsLoopback(cfg.Listen) {
		return fmt.Errorf("%s %s is not a loopback address: the embedded registry would serve anyone who can reach it; set %s and %s so that it requires them (HTTP basic auth), or listen on 127.0.0.1",
			keyListen, cfg.Listen, keyUsername, keyPassword)
	}
	return nil
}

// requireBasicAuth answers 401 to a request without the credentials. The
// comparison takes the same time whatever the input (hashes compared in
// constant time), so timing tells nothing about the password.
func requireBasicAuth(next http.Handler, user, password string) http.Handler {
	if user == "" {
		return next
	}
	wantUser, wantPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="replicator schema registry"`)
			writeError(w, http.StatusUnauthorized, 40101, "unauthorized: this registry requires registry.username and registry.password")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serverTLS is the embedded registry's TLS configuration: nil without
// CertFile and KeyFile (plain HTTP), an error naming the keys if only one
// is set or the pair does not load.
func serverTLS(cfg EmbeddedConfig) (*tls.Config, error) {
	if cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, nil
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, fmt.Errorf("%s and %s: set both or neither", keyCert, keyKey)
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", keyCert, keyKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Keys of the embedded registry's server certificate, named in errors.
const (
	keyCert = "registry.cert_file"
	keyKey  = "registry.key_file"
)
