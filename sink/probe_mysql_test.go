package sink

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestMySQLTypeProbeRequiredPrimaryKey: a server that refuses a table
// without a primary key (MariaDB innodb_force_primary_key, MySQL 8
// sql_require_primary_key, common on managed servers) takes the type
// probe, so a `type:` spelled otherwise than the catalog prints it is
// still the same type: no note, no change at a rebuild. The setting is
// global, so the test starts a MariaDB server of its own.
func TestMySQLTypeProbeRequiredPrimaryKey(t *testing.T) {
	t.Parallel()
	dsn := privateMariaDB(t, "--innodb-force-primary-key=ON")
	db, d, err := openStore(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &store{db: db, d: d}
	same, to, err := st.sameType(t.Context(), colDesc{name: "n", typ: "int(11)"}, "INT")
	if err != nil || !same {
		t.Errorf("int(11) against the type: INT: same %v, %q, %v; want the same type", same, to, err)
	}
	same, _, err = st.sameType(t.Context(), colDesc{name: "n", typ: "int(11)"}, "bigint")
	if err != nil || same {
		t.Errorf("int(11) against the type: bigint: same %v, %v; want another type", same, err)
	}
}

// privateMariaDB starts a MariaDB server of the test's own, with args,
// in a temporary directory, stopped at the test's end, and returns the
// store URL of a database in it.
func privateMariaDB(t *testing.T, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db (apt-get install mariadb-server): %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	server := exec.Command("/usr/sbin/mariadbd", append([]string{"--no-defaults", "--user=root", "--datadir=" + data,
		fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "sock"),
		"--pid-file=" + filepath.Join(dir, "pid"), "--skip-log-bin", "--innodb-buffer-pool-size=32M"}, args...)...)
	server.Stdout, server.Stderr = logFile, logFile
	if err := server.Start(); err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	t.Cleanup(func() {
		_ = server.Process.Kill()
		_ = server.Wait()
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("MariaDB server log:\n%s", b)
			}
		}
	})
	root, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for {
		err = root.PingContext(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("the test's MariaDB server does not answer on port %d: %v", port, err)
	}
	if _, err := root.ExecContext(ctx, "CREATE DATABASE t CHARACTER SET utf8mb4"); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("mysql://root@127.0.0.1:%d/t", port)
}
