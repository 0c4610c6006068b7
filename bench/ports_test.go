package main

import (
	"errors"
	"testing"
)

// The kernel may offer a port again once its probe listener closed: the
// allocator must skip it rather than give two services the same port.
func TestPortAllocatorNeverRepeats(t *testing.T) {
	t.Parallel()
	offers := []int{40001, 40001, 40002, 40001, 40002, 40003}
	a := &portAllocator{pick: func() (int, error) {
		if len(offers) == 0 {
			return 0, errors.New("out of offers")
		}
		p := offers[0]
		offers = offers[1:]
		return p, nil
	}}
	want := []string{"127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003"}
	for i, w := range want {
		got, err := a.addr()
		if err != nil {
			t.Fatalf("addr %d: %v", i, err)
		}
		if got != w {
			t.Errorf("addr %d: got %s, want %s", i, got, w)
		}
	}
	if _, err := a.addr(); err == nil {
		t.Error("picker exhausted: got no error, want one")
	}
}

// Against the kernel: many addresses from one allocator are all distinct.
func TestPortAllocatorKernelDistinct(t *testing.T) {
	t.Parallel()
	var a portAllocator
	seen := map[string]bool{}
	for i := range 200 {
		addr, err := a.addr()
		if err != nil {
			t.Fatalf("addr %d: %v", i, err)
		}
		if seen[addr] {
			t.Fatalf("addr %d: got %s twice", i, addr)
		}
		seen[addr] = true
	}
}

// A picker that only ever offers ports already handed out ends in an
// error after a bounded number of picks, not a loop.
func TestPortAllocatorGivesUp(t *testing.T) {
	t.Parallel()
	a := &portAllocator{pick: func() (int, error) { return 40001, nil }}
	if _, err := a.addr(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.addr(); err == nil {
		t.Error("got no error, want one")
	}
}
