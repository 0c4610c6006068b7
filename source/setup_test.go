package source

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/relation"
)

// TestServerSetup covers what the source reads and creates before it
// streams: the catalog (LoadTable), the publication, and the prerequisite
// checks. One cluster serves them all; each group has its own database.
func TestServerSetup(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)
	t.Run("LoadTable", func(t *testing.T) { t.Parallel(); testLoadTable(t, pg) })
	t.Run("ensurePublication", func(t *testing.T) { t.Parallel(); testEnsurePublication(t, pg) })
	t.Run("CheckServer", func(t *testing.T) { t.Parallel(); testCheckServer(t, pg) })
}

func publicTables(names ...string) []relation.Table {
	ts := make([]relation.Table, len(names))
	for i, n := range names {
		ts[i] = relation.Table{Schema: "public", Name: n}
	}
	return ts
}

func tableWithColumns(name string, columns ...string) relation.Table {
	t := relation.Table{Schema: "public", Name: name}
	for _, c := range columns {
		t.Columns = append(t.Columns, relation.Column{Name: c})
	}
	return t
}

// publicationTables lists the tables of a publication as schema.name,
// sorted.
func publicationTables(t *testing.T, conn *pgx.Conn, pub string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func testEnsurePublication(t *testing.T, pg *pgcluster.Cluster) {
	db := newDB(t, pg, "publications", `
		CREATE TABLE a (id int PRIMARY KEY);
		CREATE TABLE b (id int PRIMARY KEY);
		CREATE TABLE c (id int PRIMARY KEY);
		CREATE TABLE "Weird Name" (id int PRIMARY KEY);
		CREATE PUBLICATION has_a FOR TABLE a;
		CREATE PUBLICATION has_a_c FOR TABLE a, c;
		CREATE PUBLICATION has_a_b FOR TABLE a, b;
		CREATE PUBLICATION all_tables FOR ALL TABLES;
		CREATE PUBLICATION owned_by_postgres FOR TABLE a;
		CREATE TABLE d (id int PRIMARY KEY, name text, secret text);
		CREATE PUBLICATION no_deletes FOR TABLE a WITH (publish = 'insert, update');
		CREATE PUBLICATION all_but_truncate FOR ALL TABLES WITH (publish = 'insert, update, delete');
		CREATE PUBLICATION filtered FOR TABLE a WHERE (id > 10);
		CREATE PUBLICATION some_columns FOR TABLE d (id, name);
		CREATE PUBLICATION every_column FOR TABLE d (id, name, secret);
		CREATE ROLE limited LOGIN;
		GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited;
	`)
	tests := []struct {
		name        string
		pub         string
		tables      []relation.Table
		user        string // default postgres
		wantCreated bool
		wantTables  []string // nil: FOR ALL TABLES
		wantErr     string
	}{
		{
			name: "creates for exactly the configured tables", pub: "fresh",
			tables: publicTables("a", "b"), wantCreated: true, wantTables: []string{"public.a", "public.b"},
		},
		{
			name: "quotes table names", pub: "Fresh Quoted",
			tables: publicTables("Weird Name"), wantCreated: true, wantTables: []string{"public.Weird Name"},
		},
		{
			name: "adds the tables an existing publication lacks", pub: "has_a",
			tables: publicTables("b", "a", "Weird Name"), wantTables: []string{"public.Weird Name", "public.a", "public.b"},
		},
		{
			name: "leaves other tables in the publication", pub: "has_a_c",
			tables: publicTables("a"), wantTables: []string{"public.a", "public.c"},
		},
		{
			name: "nothing to do", pub: "has_a_b",
			tables: publicTables("a", "b"), wantTables: []string{"public.a", "public.b"},
		},
		{
			name: "FOR ALL TABLES is accepted as is", pub: "all_tables",
			tables: publicTables("a", "b"),
		},
		{
			name: "a role that may not create it is told what it needs", pub: "not_created", user: "limited",
			tables: publicTables("a"), wantErr: "the role needs CREATE on the database (or have a DBA run: CREATE PUBLICATION",
		},
		{
			name: "a role that does not own it is told what it needs", pub: "owned_by_postgres", user: "limited",
			tables: publicTables("a", "b"), wantErr: `the role needs ownership of the publication (or have a DBA run: ALTER PUBLICATION "owned_by_postgres" ADD TABLE "public"."b")`,
		},
		{
			name: "one that does not publish deletes is refused, untouched", pub: "no_deletes",
			tables:     publicTables("a", "b"),
			wantErr:    `publication no_deletes does not publish delete, truncate: those changes would never reach the topics; ALTER PUBLICATION "no_deletes" SET (publish = 'insert, update, delete, truncate')`,
			wantTables: []string{"public.a"},
		},
		{
			name: "so is FOR ALL TABLES without truncate", pub: "all_but_truncate",
			tables: publicTables("a"), wantErr: "publication all_but_truncate does not publish truncate",
		},
		{
			name: "a row filter is refused", pub: "filtered",
			tables:  publicTables("a"),
			wantErr: `publication filtered filters the rows of table public.a (WHERE (id > 10)): the topics would miss the other rows, and the snapshot would disagree with the stream; publish the whole table (BEGIN; ALTER PUBLICATION "filtered" DROP TABLE "public"."a"; ALTER PUBLICATION "filtered" ADD TABLE "public"."a"; COMMIT;)`,
		},
		{
			name: "a column list that leaves a column out is refused", pub: "some_columns",
			tables:  []relation.Table{tableWithColumns("d", "id", "name", "secret")},
			wantErr: "publication some_columns leaves column(s) secret of table public.d out of its column list",
		},
		{
			name: "a column list of every column is accepted", pub: "every_column",
			tables: []relation.Table{tableWithColumns("d", "id", "name", "secret")}, wantTables: []string{"public.d"},
		},
		{
			name: "a missing table fails", pub: "with_missing",
			tables: publicTables("nope"), wantErr: `create publication with_missing`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dsn := db.dsn
			if tt.user != "" {
				dsn = dsnAs(t, dsn, tt.user)
			}
			conn, err := Connect(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })

			created, err := ensurePublication(context.Background(), conn, tt.pub, tt.tables)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ensurePublication: got error %v, want one containing %q", err, tt.wantErr)
				}
				if tt.wantTables != nil {
					if got := publicationTables(t, conn, tt.pub); !reflect.DeepEqual(got, tt.wantTables) {
						t.Errorf("tables of %s after the refusal: got %v, want %v", tt.pub, got, tt.wantTables)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ensurePublication: got error %v, want nil", err)
			}
			if created != tt.wantCreated {
				t.Errorf("created: got %v, want %v", created, tt.wantCreated)
			}
			if tt.wantTables == nil {
				var all bool
				if err := conn.QueryRow(context.Background(), `SELECT puballtables FROM pg_publication WHERE pubname = $1`, tt.pub).Scan(&all); err != nil || !all {
					t.Errorf("puballtables of %s: got %v (%v), want true", tt.pub, all, err)
				}
				return
			}
			if got := publicationTables(t, conn, tt.pub); !reflect.DeepEqual(got, tt.wantTables) {
				t.Errorf("tables of %s: got %v, want %v", tt.pub, got, tt.wantTables)
			}
			// Running it again changes nothing.
			if created, err := ensurePublication(context.Background(), conn, tt.pub, tt.tables); err != nil || created {
				t.Errorf("second ensurePublication: got created=%v err=%v, want false, nil", created, err)
			}
			if got := publicationTables(t, conn, tt.pub); !reflect.DeepEqual(got, tt.wantTables) {
				t.Errorf("tables of %s after a second run: got %v, want %v", tt.pub, got, tt.wantTables)
			}
		})
	}
}
