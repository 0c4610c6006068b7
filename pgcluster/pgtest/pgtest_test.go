package pgtest_test

import (
	"errors"
	"os"
	"testing"

	"github.com/replicator/replicator/pgcluster"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

func TestStartConnect(t *testing.T) {
	t.Parallel()
	var dir string
	t.Run("cluster", func(t *testing.T) {
		c := pgtest.Start(t, pgtest.Setting("max_wal_senders", "3"), func(o *pgcluster.Options) {
			o.Settings["application_name"] = "pgtest"
		})
		dir = c.Dir()
		conn := pgtest.Connect(t, c.DSN(""))
		for _, tc := range []struct{ setting, want string }{
			{"wal_level", "logical"},
			{"max_wal_senders", "3"},
			{"application_name", "pgtest"},
		} {
			var got string
			if err := conn.QueryRow(t.Context(), "SHOW "+tc.setting).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("SHOW %s: got %q, want %q", tc.setting, got, tc.want)
			}
		}
	})
	if dir == "" {
		t.Fatal("subtest did not start a cluster")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory after the test: got %v, want it removed", err)
	}
}
