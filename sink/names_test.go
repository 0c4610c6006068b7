package sink

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// TestNamesWithinStoreLimits: a table whose rebuild name (<table>__rebuild)
// or a column name the store would not keep as given (PostgreSQL cuts it
// to 63 bytes, MySQL refuses it over 64 characters), or on MySQL a read
// model name the sink's tables cannot hold with a rebuild's suffix, is
// refused at construction, naming the read model, the table and the
// limit, before anything connects; `check` reports the same.
func TestNamesWithinStoreLimits(t *testing.T) {
	t.Parallel()
	stores := map[string]string{
		"postgres": "postgres://u@127.0.0.1:1/none",
		"mysql":    "mysql://root@127.0.0.1:1/none",
		"sqlite":   "sqlite://" + t.TempDir() + "/never.db",
	}
	model := func(name, table, column string) ReadModel {
		return ReadModel{Name: name, Table: table, Key: []string{"id"}, Sources: []Source{
			{Topic: "customers", Key: []string{"id"}, Owner: true, Columns: []Column{{Name: "id", Field: "id"}, {Name: column, Field: "name"}}},
		}}
	}
	x := strings.Repeat
	for _, c := range []struct {
		name, store       string
		model, table, col string
		want              []string // parts of the error; none: accepted
	}{
		{"postgres table at the limit", "postgres", "m", x("t", 63-9), "c", nil},
		{"postgres table over", "postgres", "m", x("t", 63-8), "c", []string{`read model "m"`, `table "` + x("t", 55) + `"`, "64 bytes", "63 bytes", "at most 54 bytes"}},
		{"postgres multibyte table over", "postgres", "m", x("ü", 28), "c", []string{"65 bytes", "63 bytes"}},
		{"postgres column over", "postgres", "m", "t", x("c", 64), []string{`column "` + x("c", 64) + `" of table "t"`, "64 bytes", "63 bytes"}},
		{"postgres column at the limit", "postgres", "m", "t", x("c", 63), nil},
		{"mysql multibyte table within", "mysql", "m", x("ü", 55), "c", nil},
		{"mysql table over", "mysql", "m", x("t", 56), "c", []string{`read model "m"`, "65 characters", "64 characters", "at most 55 characters"}},
		{"mysql column over", "mysql", "m", "t", x("c", 65), []string{"column", "65 characters", "64 characters"}},
		{"mysql read model name over", "mysql", x("m", 192), "t", "c", []string{"201 characters", "200"}},
		{"mysql read model name at the limit", "mysql", x("m", 191), "t", "c", nil},
		{"sqlite has no limit", "sqlite", x("m", 300), x("t", 300), x("c", 300), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Model: model(c.model, c.table, c.col), StoreURL: stores[c.store], Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Registry: &sr.Client{}}
			_, err := New(cfg)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v, want it accepted", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted it, want an error with %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: %v\nwant it to contain %q", err, w)
				}
			}
			// check reports it, before it tries the store (which does not
			// answer here).
			_, problems := Check(t.Context(), cfg)
			if len(problems) != 1 || problems[0].Error() != err.Error() {
				t.Errorf("Check: problems %v, want [%v]", problems, err)
			}
		})
	}
}
