package listenaddr

import (
	"net"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9092": true, "[::1]:9092": true, "localhost:9092": true, "LOCALHOST:1": true,
		":9092": false, "0.0.0.0:9092": false, "10.0.0.5:9092": false, "example.com:9092": false, "no-port": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	err = Check(addr, "metrics.listen")
	if err == nil || !strings.Contains(err.Error(), "metrics.listen") || !strings.Contains(err.Error(), addr) {
		t.Errorf("Check of a taken port: got %v, want an error naming metrics.listen and %s", err, addr)
	}
	ln.Close()
	if err := Check(addr, "metrics.listen"); err != nil {
		t.Errorf("Check of a free port: %v", err)
	}
}
