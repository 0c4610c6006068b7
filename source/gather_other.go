//go:build !linux

package source

import "net"

// setLowWater does nothing off Linux (where it is not known whether the
// poller honours the mark): receives wait as before.
func setLowWater(net.Conn, int) bool { return false }
