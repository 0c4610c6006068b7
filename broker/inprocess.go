package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// inProcessListener is the embedded broker's listener: it accepts TCP
// connections from other processes and, through [Embedded.DialContext],
// in-memory connections from clients in this process. A producer in the
// broker's own process then costs no syscalls, loopback segments or kernel
// network processing per request: about a tenth of the replicator's CPU on
// the stream benchmark (docs/BENCHMARKS.md).
type inProcessListener struct {
	tcp   net.Listener
	conns chan accepted // from the TCP accept loop and from dial
	done  chan struct{} // closed by Close

	closeOnce sync.Once
	loopDone  chan struct{} // closed when the TCP accept loop has returned
}

type accepted struct {
	conn net.Conn
	err  error
}

var errListenerClosed = errors.New("embedded broker: listener closed")

func newInProcessListener(tcp net.Listener) *inProcessListener {
	l := &inProcessListener{
		tcp:      tcp,
		conns:    make(chan accepted),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go l.acceptTCP() // owned by l: returns once Close has closed tcp
	return l
}

// acceptTCP hands TCP connections (and Accept's errors: kfake stops
// listening on the first one) to Accept until the listener is closed.
func (l *inProcessListener) acceptTCP() {
	defer close(l.loopDone)
	for {
		c, err := l.tcp.Accept()
		select {
		case l.conns <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

func (l *inProcessListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.conns:
		return a.conn, a.err
	case <-l.done:
		return nil, errListenerClosed
	}
}

// Close stops accepting both kinds of connection; connections already
// accepted stay open (kfake closes its own).
func (l *inProcessListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.tcp.Close()
		<-l.loopDone
	})
	return err
}

func (l *inProcessListener) Addr() net.Addr { return l.tcp.Addr() }

// dial returns the client end of a new in-memory connection whose server
// end the broker accepts.
func (l *inProcessListener) dial(ctx context.Context) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- accepted{conn: server}:
		return client, nil
	case <-l.done:
		server.Close()
		client.Close()
		return nil, errListenerClosed
	case <-ctx.Done():
		server.Close()
		client.Close()
		return nil, fmt.Errorf("embedded broker: dial in process: %w", ctx.Err())
	}
}
