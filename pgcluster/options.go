package pgcluster

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// Options configure [Start]. The zero value is ready to use.
type Options struct {
	// BaseDir is the directory under which Start creates the cluster's own
	// directory (see [Cluster.Dir]). Default: os.TempDir().
	//
	// When running as root, the server runs as the postgres OS user, which
	// must be able to traverse every directory above the cluster: t.TempDir()
	// is not (it is 0700 and root-owned), os.TempDir() is.
	BaseDir string

	// Port is the TCP port the server listens on, on 127.0.0.1.
	// Default 0: a free port picked at start (retried if it was taken in the
	// meantime). A restart ([Cluster.Start]) keeps the port.
	Port int

	// Settings are postgresql.conf parameters that override or add to the
	// defaults below. Names are plain parameter names ("work_mem"); values
	// are written quoted, as postgresql.conf allows for every type. "port" is
	// not accepted here: use Port.
	//
	// Defaults, chosen for logical replication tests that run fast:
	//
	//	wal_level               = logical
	//	max_replication_slots   = 10
	//	max_wal_senders         = 10
	//	listen_addresses        = 127.0.0.1
	//	unix_socket_directories = the cluster directory (never the system one)
	//	fsync                   = off   (a process crash loses nothing; an OS crash may)
	//	full_page_writes        = off
	//	synchronous_commit      = on
	//
	// synchronous_commit stays on on purpose: with fsync=off a commit costs a
	// write(2), not a flush, so off buys no speed, while logical decoding only
	// sends flushed WAL, and the WAL writer flushes asynchronous commits every
	// wal_writer_delay (200ms): with off, every small transaction reached a
	// slot ~200ms late (measured: 200ms vs 0.9ms), and a commit could be lost
	// by [Cluster.Kill].
	//
	// initdb also sets timezone = UTC and lc_messages = C.
	Settings map[string]string

	// Log receives the output of initdb and pg_ctl. Default: discarded.
	// The server's own log always goes to [Cluster.LogPath].
	Log io.Writer

	// BinDir is the directory holding initdb, pg_ctl and postgres.
	// Default: [FindBinaries].
	BinDir string
}

// settingName matches a PostgreSQL configuration parameter name, including
// custom ones ("auto_explain.log_min_duration").
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// validate rejects options that cannot work, naming each problem.
func (o Options) validate() error {
	var errs []error
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: out of range 0..65535", o.Port))
	}
	for name := range o.Settings {
		switch {
		case !settingName.MatchString(name):
			errs = append(errs, fmt.Errorf("setting %q: not a parameter name", name))
		case strings.EqualFold(name, "port"):
			errs = append(errs, errors.New(`setting "port": use Options.Port`))
		}
	}
	return errors.Join(errs...)
}

// config renders the postgresql.conf lines for dir and port: the defaults,
// overridden by o.Settings, in name order so that the file is deterministic.
func (o Options) config(dir string, port int) string {
	settings := map[string]string{
		"wal_level":               "logical",
		"max_replication_slots":   "10",
		"max_wal_senders":         "10",
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": dir,
		"fsync":                   "off",
		"full_page_writes":        "off",
		"synchronous_commit":      "on",
	}
	for name, value := range o.Settings {
		settings[strings.ToLower(name)] = value
	}
	settings["port"] = fmt.Sprint(port)

	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# Written by pgcluster. ALTER SYSTEM (postgresql.auto.conf) overrides it.\n")
	for _, name := range names {
		fmt.Fprintf(&b, "%s = %s\n", name, quote(settings[name]))
	}
	return b.String()
}

// quote returns value as a postgresql.conf string literal.
func quote(value string) string {
	value = strings.ReplaceAll(value, `\`, `\\`)
	return "'" + strings.ReplaceAll(value, "'", "''") + "'"
}
