package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// BinEnv is the environment variable that names the directory holding the
// PostgreSQL server binaries (initdb, pg_ctl, postgres). When it is set,
// [FindBinaries] uses it and nothing else.
const BinEnv = "REPLICATOR_PG_BIN"

// installHint tells a developer or a CI image what is missing and how to fix it.
const installHint = "install postgresql (Debian: apt-get install -y postgresql) or set " + BinEnv + " to the directory holding initdb, pg_ctl and postgres"

// serverBinaries are the programs a cluster needs.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// FindBinaries returns the directory holding the PostgreSQL server binaries.
// It looks, in order, at:
//
//  1. $REPLICATOR_PG_BIN, if set: it must hold the binaries, there is no fallback;
//  2. `pg_config --bindir`, if pg_config is on PATH and that directory holds the
//     server binaries (a client-only install ships pg_config without them);
//  3. the highest major version under /usr/lib/postgresql/*/bin (Debian and Ubuntu
//     install there without putting the binaries on PATH).
//
// The error says what to install.
func FindBinaries() (string, error) {
	if dir, ok := os.LookupEnv(BinEnv); ok {
		if missing := missingBinaries(dir); len(missing) > 0 {
			return "", fmt.Errorf("PostgreSQL server binaries not found: %s=%q has no %s: %s",
				BinEnv, dir, strings.Join(missing, ", "), installHint)
		}
		return dir, nil
	}
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.Command(pgConfig, "--bindir").Output()
		if dir := strings.TrimSpace(string(out)); err == nil && len(missingBinaries(dir)) == 0 {
			return dir, nil
		}
	}
	if dir := debianBinaries("/usr/lib/postgresql"); dir != "" {
		return dir, nil
	}
	return "", errors.New("PostgreSQL server binaries not found: " + installHint)
}

// debianBinaries returns root/<version>/bin for the highest version that
// holds the server binaries, or "" when there is none.
func debianBinaries(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	type candidate struct {
		version []int
		dir     string
	}
	var found []candidate
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		dir := filepath.Join(root, e.Name(), "bin")
		if ok && len(missingBinaries(dir)) == 0 {
			found = append(found, candidate{v, dir})
		}
	}
	sort.Slice(found, func(i, j int) bool { return lessVersion(found[i].version, found[j].version) })
	if len(found) == 0 {
		return ""
	}
	return found[len(found)-1].dir
}

// parseVersion parses "15" or "9.6" into its numeric parts.
func parseVersion(s string) ([]int, bool) {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

func lessVersion(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// missingBinaries lists the server binaries that dir lacks (or that are not
// executable regular files).
func missingBinaries(dir string) []string {
	var missing []string
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}
