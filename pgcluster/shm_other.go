//go:build !(linux && (amd64 || arm64))

package pgcluster

// removeShm does nothing here: the next start of the same data directory
// recycles the segment, and a removed cluster leaks only a few bytes.
func removeShm(int) {}
