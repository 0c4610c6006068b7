//go:build linux

package source

import (
	"net"
	"syscall"
	"testing"
)

func TestSetLowWater(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { // ends with the Accept
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := <-accepted; s != nil {
		defer s.Close()
	}
	if !setLowWater(c, gatherBytes) {
		t.Fatal("setLowWater on a TCP connection: not set")
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if got != gatherBytes {
		t.Fatalf("SO_RCVLOWAT %d, want %d", got, gatherBytes)
	}

	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if setLowWater(p1, gatherBytes) {
		t.Fatal("setLowWater on a pipe: reported set")
	}
}
