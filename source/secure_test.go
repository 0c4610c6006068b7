package source

import (
	"context"
	"crypto/x509"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/replicator/replicator/certtest"
	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
	"github.com/replicator/replicator/relation"
)

// startTLSCluster starts a cluster with ssl=on and a server certificate
// signed by a CA the test made; it returns the cluster and the CA file.
func startTLSCluster(t *testing.T) (*pgcluster.Cluster, string) {
	t.Helper()
	// Outside t.TempDir (0700, root's): the server may run as postgres.
	dir, err := os.MkdirTemp("", "replicator-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca := certtest.NewCA(t, "replicator test CA")
	certPEM, keyPEM := ca.IssuePEM(t, "localhost", x509.ExtKeyUsageServerAuth)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{caFile, ca.PEM(), 0o644}, {certFile, certPEM, 0o644}, {keyFile, keyPEM, 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if os.Getuid() == 0 { // the server runs as postgres and must own its key
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("look up the postgres OS user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(keyFile, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	pg := startCluster(t,
		pgtest.Setting("ssl", "on"),
		pgtest.Setting("ssl_cert_file", certFile),
		pgtest.Setting("ssl_key_file", keyFile),
	)
	return pg, caFile
}

// withQuery replaces the query of a cluster DSN.
func withQuery(dsn, query string) string {
	base, _, _ := strings.Cut(dsn, "?")
	return base + "?" + query
}

// TestSecureConnections: source.url with pgx's own parameters, TLS with
// verify-full against a CA the test made (and a wrong CA failing
// clearly), and a least-privilege role.
func TestSecureConnections(t *testing.T) {
	pg, caFile := startTLSCluster(t)
	db := newDB(t, pg, "secure", `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	t.Run("pgx URL parameters", func(t *testing.T) {
		// pgx's own settings: before, they reached the server as unknown
		// runtime parameters and the connection failed.
		dsn := withQuery(db.dsn, "sslmode=disable&statement_cache_capacity=0&description_cache_capacity=0&default_query_exec_mode=exec")
		conn, err := Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		defer conn.Close(ctx)
		var tz string
		if err := conn.QueryRow(ctx, `SHOW TimeZone`).Scan(&tz); err != nil || tz != "UTC" {
			t.Errorf("session TimeZone: got %q (%v), want UTC", tz, err)
		}
		snap, err := connectSnapshot(ctx, dsn)
		if err != nil {
			t.Fatalf("connectSnapshot: %v", err)
		}
		snap.Close(ctx)
		repl, err := connectReplication(ctx, dsn)
		if err != nil {
			t.Fatalf("connectReplication: %v", err)
		}
		defer repl.Close(ctx)
		if _, err := pglogrepl.IdentifySystem(ctx, repl); err != nil {
			t.Errorf("IDENTIFY_SYSTEM: %v", err)
		}
	})

	t.Run("unparsable URL is not quoted", func(t *testing.T) {
		for _, bad := range []string{"postgres://u:se cret@h:port/db", "host=h password='secret"} {
			_, err := Connect(ctx, bad)
			if err == nil || !strings.Contains(err.Error(), "source.url does not parse") {
				t.Errorf("Connect(%q): got %v, want a parse error naming source.url", bad, err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Connect(%q): error quotes the password: %v", bad, err)
			}
		}
	})

	t.Run("TLS verify-full", func(t *testing.T) {
		dsn := withQuery(db.dsn, "sslmode=verify-full&sslrootcert="+caFile)
		conn, err := Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		defer conn.Close(ctx)
		var ssl bool
		if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
			t.Errorf("SQL connection over TLS: got %v (%v), want true", ssl, err)
		}
		repl, err := connectReplication(ctx, dsn)
		if err != nil {
			t.Fatalf("connectReplication: %v", err)
		}
		defer repl.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = $1`, int32(repl.PID())).Scan(&ssl); err != nil || !ssl {
			t.Errorf("replication connection over TLS: got %v (%v), want true", ssl, err)
		}

		// A Source streams over it.
		h := newFakeHandler(false)
		src := db.newSource(t.TempDir(), nil, func(c *Config) { c.URL = dsn; c.Slot = "secure_tls"; c.Publication = "secure_tls" }, "items")
		r := run(t, src, h)
		db.exec(`INSERT INTO items VALUES (1, 'over tls')`)
		r.waitChanges(t, h, "the row inserted", atLeast(1))
		if err := r.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	t.Run("TLS with the wrong CA fails clearly", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other-ca.crt")
		if err := os.WriteFile(other, certtest.NewCA(t, "some other CA").PEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Connect(ctx, withQuery(db.dsn, "sslmode=verify-full&sslrootcert="+other))
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("Connect with the wrong CA: got %v, want a certificate verification error", err)
		}
	})
}

// TestLeastPrivilege: a role with only REPLICATION, USAGE on the schema
// and SELECT on the tables streams once an administrator has created the
// publication; before the grants, CheckPrivileges and CheckTable name
// each missing one with the statement that grants it.
func TestLeastPrivilege(t *testing.T) {
	pg := startCluster(t)
	db := newDB(t, pg, "leastpriv", `
		CREATE SCHEMA app;
		CREATE TABLE app.orders (id int PRIMARY KEY, note text);
		CREATE TABLE public.lines (id int PRIMARY KEY, qty int);
		INSERT INTO app.orders VALUES (1, 'before');
		CREATE ROLE streamer LOGIN REPLICATION;
	`)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tables := []relation.Table{db.tableIn("app", "orders"), db.tableIn("public", "lines")}
	asStreamer := dsnAs(t, db.dsn, "streamer")
	conn, err := Connect(ctx, asStreamer)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// The tables load without USAGE on their schema, so that the checks
	// below can name it.
	for _, tbl := range tables {
		if _, err := LoadTable(ctx, conn, tbl.Schema, tbl.Name); err != nil {
			t.Errorf("LoadTable(%s.%s) as streamer: %v", tbl.Schema, tbl.Name, err)
		}
	}
	var problems []error
	problems = append(problems, CheckPrivileges(ctx, conn, "leastpriv", tables)...)
	for i := range tables {
		problems = append(problems, CheckTable(ctx, conn, &tables[i])...)
	}
	wantProblems(t, problems,
		`role streamer lacks USAGE on schema app: GRANT USAGE ON SCHEMA "app" TO "streamer"`,
		`publication leastpriv does not exist and role streamer may not create it: that needs CREATE on the database (GRANT CREATE ON DATABASE "leastpriv" TO "streamer") and ownership of app.orders, public.lines (which no GRANT of privileges gives); or have an administrator create it: CREATE PUBLICATION "leastpriv" FOR TABLE "app"."orders", "public"."lines"`,
		`table "app"."orders": role streamer lacks SELECT: GRANT SELECT ON "app"."orders" TO "streamer"`,
		`table "public"."lines": role streamer lacks SELECT: GRANT SELECT ON "public"."lines" TO "streamer"`,
	)

	// An administrator's publication that lacks a table.
	db.exec(`CREATE PUBLICATION leastpriv FOR TABLE app.orders`)
	wantProblems(t, CheckPrivileges(ctx, conn, "leastpriv", tables),
		`role streamer lacks USAGE on schema app`,
		`publication leastpriv lacks table(s) "public"."lines" and role streamer may not add them (that needs ownership of the publication and of the tables): have an administrator run ALTER PUBLICATION "leastpriv" ADD TABLE "public"."lines"`,
	)

	db.exec(`ALTER PUBLICATION leastpriv ADD TABLE public.lines;
		GRANT USAGE ON SCHEMA app TO streamer;
		GRANT SELECT ON app.orders, public.lines TO streamer`)
	problems = CheckPrivileges(ctx, conn, "leastpriv", tables)
	for i := range tables {
		problems = append(problems, CheckTable(ctx, conn, &tables[i])...)
	}
	wantProblems(t, problems)
	wantProblems(t, CheckServer(ctx, conn, "leastpriv", "leastpriv"))

	// And it streams: snapshot, then changes.
	src, err := New(Config{
		URL: asStreamer, Slot: "leastpriv", Publication: "leastpriv", StateDir: t.TempDir(),
		StatusInterval: 50 * time.Millisecond, ShutdownTimeout: 10 * time.Second,
	}, tables)
	if err != nil {
		t.Fatal(err)
	}
	h := newFakeHandler(false)
	r := run(t, src, h)
	r.waitChanges(t, h, "the snapshot row", atLeast(1))
	db.exec(`INSERT INTO public.lines VALUES (7, 3); UPDATE app.orders SET note = 'after' WHERE id = 1`)
	got := r.waitChanges(t, h, "the insert and the update", atLeast(3))
	if err := r.stop(t); err != nil {
		t.Errorf("Run: %v", err)
	}
	if s := summarize(got); !strings.Contains(s, "lines 7") || !strings.Contains(s, "orders 1") {
		t.Errorf("changes: %s", s)
	}
}

// tableIn loads schema.name of this database.
func (db *testDB) tableIn(schema, name string) relation.Table {
	db.t.Helper()
	tbl, err := LoadTable(context.Background(), db.conn, schema, name)
	if err != nil {
		db.t.Fatalf("LoadTable(%s.%s): %v", schema, name, err)
	}
	return tbl
}
