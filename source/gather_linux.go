//go:build linux

package source

import (
	"net"
	"syscall"
)

// setLowWater sets the receive low-water mark of conn's TCP socket to n
// bytes: a reader waiting on the socket is then woken only once n bytes
// are queued (or at its deadline), while a read that does not wait still
// returns whatever is there. It reports whether the mark was set: only TCP
// sockets have one that the kernel's poll honours.
func setLowWater(conn net.Conn, n int) bool {
	if t, ok := conn.(interface{ NetConn() net.Conn }); ok { // TLS
		conn = t.NetConn()
	}
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	}); err != nil || serr != nil {
		return false
	}
	return true
}
