//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package filelock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLock: a missing file is not held; a locked one is, and a second
// Lock of it fails saying it is in use; closing the locker frees it; Held
// does not create the file.
func TestLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "x.lock")
	if held, err := Held(path); err != nil || held {
		t.Fatalf("missing file: got held=%v, %v; want not held", held, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Held created %s (stat: %v)", path, err)
	}
	if err := CheckFree(dir, path); err != nil {
		t.Fatalf("CheckFree of a missing file: %v", err)
	}

	f := open(t, path)
	if err := Lock(f); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if held, err := Held(path); err != nil || !held {
		t.Errorf("locked file: got held=%v, %v; want held", held, err)
	}
	g := open(t, path)
	if err := Lock(g); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("second Lock: got %v, want ErrHeld saying %s is in use", err, path)
	}
	err := CheckFree(dir, path)
	for _, want := range []string{"data_dir", dir, "in use by another process", "another data_dir"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckFree of a held lock: got %v, want it to mention %q", err, want)
		}
	}

	f.Close()
	if held, err := Held(path); err != nil || held {
		t.Errorf("after the locker closed: got held=%v, %v; want not held", held, err)
	}
	if err := Lock(g); err != nil {
		t.Errorf("Lock after the locker closed: %v", err)
	}
}

func open(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
