package main

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// portAllocator hands out loopback addresses for the services a benchmark
// starts (embedded broker, registry, metrics, broker process). Each port
// was free when picked, and none is handed out twice by one allocator: a
// port is picked by binding port 0 and closing, and the service binds it
// later in another process, so two picks in a row could otherwise get the
// same port from the kernel (a run once saw the embedded registry given
// the broker's port). The zero value is ready to use; it is safe for
// concurrent use.
type portAllocator struct {
	// pick returns a port free now; nil picks one from the kernel.
	pick func() (int, error)

	mu    sync.Mutex   // protects given
	given map[int]bool // every port handed out
}

// pickAttempts bounds how often addr picks again when the kernel offers a
// port it already handed out.
const pickAttempts = 100

// addr returns "127.0.0.1:port" with a port free right now and never
// handed out before by a.
func (a *portAllocator) addr() (string, error) {
	pick := a.pick
	if pick == nil {
		pick = kernelPort
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for range pickAttempts {
		p, err := pick()
		if err != nil {
			return "", fmt.Errorf("pick a free port: %w", err)
		}
		if a.given[p] {
			continue
		}
		if a.given == nil {
			a.given = map[int]bool{}
		}
		a.given[p] = true
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
	}
	return "", fmt.Errorf("pick a free port: %d picks all gave ports already handed out", pickAttempts)
}

// kernelPort returns a port of 127.0.0.1 free right now.
func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
