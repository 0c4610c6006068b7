package broker

import (
	"strings"
	"testing"

	"github.com/replicator/replicator/listenaddr/addrtest"
)

func TestCheckEmbedded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	free := freeAddr(t)
	if err := CheckEmbedded(free, dir); err != nil {
		t.Fatalf("free address, unused data dir: got %v", err)
	}
	e := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	err := CheckEmbedded(e.Addr(), dir)
	if err == nil {
		t.Fatal("address and data dir of a running broker: got no error")
	}
	for _, want := range []string{"kafka.listen", e.Addr(), "data_dir", dir, "in use by another process"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	e.Close()
	if err := CheckEmbedded(free, dir); err != nil {
		t.Errorf("after Close: got %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return addrtest.Free(t)
}
