//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package broker

// lockDir is a no-op where flock is unavailable: nothing stops two brokers
// from sharing a data directory there.
func lockDir(string) (unlock func() error, err error) {
	return func() error { return nil }, nil
}

// lockHeld cannot tell where flock is unavailable.
func lockHeld(string) (bool, error) { return false, nil }
