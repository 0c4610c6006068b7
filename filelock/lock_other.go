//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package filelock

import "os"

// Lock is a no-op where flock is unavailable: nothing stops two processes
// from sharing a data directory there.
func Lock(*os.File) error { return nil }

// Held cannot tell where flock is unavailable.
func Held(string) (bool, error) { return false, nil }
