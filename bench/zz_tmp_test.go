package main

import "testing"

func TestTmpMethod(t *testing.T) {
	if err := writeDoc("/tmp/bench14-method.md", machine{cpus: 2}, options{runs: 3, scale: 1}, nil, ""); err != nil {
		t.Fatal(err)
	}
}
