package addrtest

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestFree: the addresses are distinct, bindable and below the kernel's
// ephemeral range, where no port-0 listener or outgoing connection gets
// its port.
func TestFree(t *testing.T) {
	low, high := fixedRange()
	seen := map[string]bool{}
	for range 50 {
		addr := Free(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < low || port >= high {
			t.Errorf("%s: port outside [%d, %d)", addr, low, high)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is not free: %v", addr, err)
		}
		l.Close()
	}
	// Where the kernel's range starts at or above the end of Free's, a
	// port-0 listener gets its port outside Free's.
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	f := strings.Fields(string(b))
	if err != nil || len(f) != 2 {
		t.Logf("no ip_local_port_range to compare with (%v): Free's range is [%d, %d)", err, low, high)
		return
	}
	if start, err := strconv.Atoi(f[0]); err != nil || start < high {
		t.Logf("the kernel's ephemeral range starts at %s, inside Free's [%d, %d): no guarantee to check", f[0], low, high)
		return
	}
	eph, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer eph.Close()
	if port := eph.Addr().(*net.TCPAddr).Port; port >= low && port < high {
		t.Errorf("the kernel gave port %d to a port-0 listener, inside Free's range [%d, %d)", port, low, high)
	}
}
