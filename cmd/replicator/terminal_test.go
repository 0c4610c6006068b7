package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestTerminalOnlyForCharDevices: the snapshot's progress bar goes to stderr
// only when it is a terminal; a pipe, a file or a buffer gets log lines.
func TestTerminalOnlyForCharDevices(t *testing.T) {
	if terminal(&bytes.Buffer{}) != nil {
		t.Error("a buffer: got a terminal")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if terminal(f) != nil {
		t.Error("a regular file: got a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if terminal(w) != nil {
		t.Error("a pipe: got a terminal")
	}
}
