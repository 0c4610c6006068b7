// Package listenaddr answers two questions about a listen address (host:port)
// that the embedded services, the metrics server and their config checks
// all ask: does it accept connections from this machine only, and could
// it be bound now.
package listenaddr

import (
	"fmt"
	"net"
	"strings"
)

// IsLoopback reports whether a listen address accepts only connections
// from this machine: a loopback IP or "localhost". An empty host or a
// wildcard listens on every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Check binds addr and releases it at once, for `replicator check`, which
// would otherwise call a taken port (a replicator already running, another
// exporter) fine; key is the address's config key, named in the error
// with the fix.
func Check(addr, key string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: cannot listen on %s (%w): another process (a replicator already running?) may hold the port; stop it or set %s to a free address", key, addr, err, key)
	}
	return ln.Close()
}
