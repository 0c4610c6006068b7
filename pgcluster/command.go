package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// osUser is the account the server runs as when we are root: initdb and
// postgres refuse to run as root.
const osUser = "postgres"

// runner runs the PostgreSQL programs, as [osUser] through runuser when the
// current process is root, directly otherwise.
type runner struct {
	binDir  string
	runuser string // path of runuser; "" when not root
	uid     int    // owner for files we create; -1 when not root
	gid     int
	log     io.Writer // copy of every program's output; never nil
}

func newRunner(binDir string, log io.Writer) (runner, error) {
	if log == nil {
		log = io.Discard
	}
	r := runner{binDir: binDir, uid: -1, gid: -1, log: log}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return r, fmt.Errorf("running as root needs the %q OS user to run PostgreSQL (the postgresql package creates it): %w", osUser, err)
	}
	if r.uid, err = strconv.Atoi(u.Uid); err != nil {
		return r, fmt.Errorf("user %s: uid %q: %w", osUser, u.Uid, err)
	}
	if r.gid, err = strconv.Atoi(u.Gid); err != nil {
		return r, fmt.Errorf("user %s: gid %q: %w", osUser, u.Gid, err)
	}
	r.runuser, err = exec.LookPath("runuser")
	if err != nil {
		for _, p := range []string{"/usr/sbin/runuser", "/sbin/runuser"} {
			if _, statErr := os.Stat(p); statErr == nil {
				r.runuser, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return r, fmt.Errorf("running as root needs runuser (util-linux) to run PostgreSQL as %q: %w", osUser, err)
	}
	return r, nil
}

// run runs program (initdb, pg_ctl, ...) with args in dir and returns its
// combined output. On ctx cancellation the whole process group is killed;
// a postmaster that pg_ctl started is not in it (pg_ctl detaches it with setsid)
// and is the caller's to clean up.
func (r runner) run(ctx context.Context, dir, program string, args ...string) (string, error) {
	name := filepath.Join(r.binDir, program)
	if r.runuser != "" {
		args = append([]string{"-u", osUser, "--", name}, args...)
		name = r.runuser
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, r.log)
	cmd.Stderr = cmd.Stdout
	ownProcessGroup(cmd)
	// pg_ctl's detached postmaster does not keep our pipe open, but never let
	// a stray descendant hang Wait.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return out.String(), fmt.Errorf("%s: %w%s", program, err, indent(out.String()))
	}
	return out.String(), nil
}

// chown gives path to the server's OS user when we are root.
func (r runner) chown(path string) error {
	if r.uid < 0 {
		return nil
	}
	return os.Chown(path, r.uid, r.gid)
}

// reachable reports why the server's OS user cannot reach dir, or nil.
// Only meaningful as root: a non-root user created the directory itself.
func (r runner) reachable(dir string) error {
	if r.uid < 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		uid, gid, ok := fileOwner(fi)
		perm := fi.Mode().Perm()
		canSearch := perm&0o001 != 0 ||
			(ok && uid == r.uid && perm&0o100 != 0) ||
			(ok && gid == r.gid && perm&0o010 != 0)
		if !canSearch {
			return fmt.Errorf("the %s OS user cannot traverse %s (mode %v): set Options.BaseDir (or TMPDIR) to a directory it can reach, such as /tmp",
				osUser, p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// childEnv is our environment without the libpq variables (PGDATA, PGPORT,
// PGHOST, PGOPTIONS, ...) that would redirect pg_ctl, with messages in
// English and initdb's time zone fixed to UTC (which also spares it a scan
// of the zoneinfo tree).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "TZ=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "TZ=UTC")
}

// indent formats program output for an error message: its last lines,
// indented on new lines, or nothing when there is no output.
func indent(out string) string {
	const maxLines = 30
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	if len(lines) > maxLines {
		lines = append([]string{"..."}, lines[len(lines)-maxLines:]...)
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}

// errNotRunning is returned by operations that need a running server.
var errNotRunning = errors.New("cluster is not running")
