package registry

import (
	"net"
	"strings"
	"testing"
)

func TestCheckEmbedded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln.Addr().String()
	ln.Close()
	if err := CheckEmbedded(free, dir); err != nil {
		t.Fatalf("free address, unused data dir: got %v", err)
	}
	e := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	addr := strings.TrimPrefix(e.URL(), "http://")
	err = CheckEmbedded(addr, dir)
	if err == nil {
		t.Fatal("address and data dir of a running registry: got no error")
	}
	for _, want := range []string{"registry.listen", addr, "data_dir", dir, "in use by another process"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
