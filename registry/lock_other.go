//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package registry

import "os"

// lockFile is a no-op where flock is unavailable: nothing stops two
// registries from sharing a log there.
func lockFile(*os.File) error { return nil }

// lockHeld cannot tell where flock is unavailable.
func lockHeld(string) (bool, error) { return false, nil }
