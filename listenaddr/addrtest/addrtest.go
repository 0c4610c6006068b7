// Package addrtest hands tests loopback addresses that nothing listens on,
// for a server the test starts to bind later (an embedded broker, a
// registry, a metrics listener, a replicator process) or to find refused.
package addrtest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Free returns 127.0.0.1:port with a port nothing listens on.
//
// The port comes from below the kernel's ephemeral range
// (ip_local_port_range), never from listening on port 0: a port the kernel
// picks is free only until released, and the kernel hands the ephemeral
// range out all the time meanwhile, to every outgoing connection (the
// tests', the servers', PostgreSQL's) and to every listener on port 0
// (each PostgreSQL cluster of pgcluster picks its port so). Once one took
// it, the server fails to bind (address already in use) and the test
// fails for nothing. Below the range only another Free could pick the
// port: each is handed out once per test binary, from a random start so
// that two binaries running at once rarely meet, and checked bindable.
func Free(t testing.TB) string {
	t.Helper()
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.used == nil {
		ports.used = map[int]bool{}
		ports.low, ports.high = fixedRange()
		ports.next = ports.low + rand.IntN(ports.high-ports.low)
	}
	for range ports.high - ports.low {
		port := ports.next
		if ports.next++; ports.next == ports.high {
			ports.next = ports.low
		}
		if ports.used[port] {
			continue
		}
		ports.used[port] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // something on this machine listens there
		}
		l.Close()
		return addr
	}
	t.Fatalf("addrtest: no free port left in [%d, %d)", ports.low, ports.high)
	return ""
}

// ports is what Free has handed out in this process.
var ports struct {
	mu              sync.Mutex // guards the fields
	low, high, next int
	used            map[int]bool
}

// fixedRange is the ports Free picks from: from 10000 (above the
// well-known services, MariaDB's 3306 among them) to the start of the
// kernel's ephemeral range (Linux's default 32768 when it cannot be read).
func fixedRange() (low, high int) {
	low, high = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > low+1000 {
				high = n
			}
		}
	}
	return low, high
}
