package sink

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// New refuses, before connecting anywhere, a read model whose table is one
// of the sink's own tables (its offsets, its side rows: a user following
// "add the missing columns" would have the sink write rows into them) and
// a dead-letter topic that is one of its source topics (a poison record
// would be consumed again, and again).
func TestNewRejectsCollisions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		edit  func(m *ReadModel)
		wants []string
	}{
		{"offsets table", func(m *ReadModel) { m.Table = "replicator_sink_offsets" }, []string{`read model "profile"`, `table "replicator_sink_offsets" is the sink's own table`, "(table:)"}},
		{"side table, other case", func(m *ReadModel) { m.Table = "Replicator_Sink_Side" }, []string{`table "Replicator_Sink_Side" is the sink's own table`}},
		{"dead-letter topic is a source", func(m *ReadModel) { m.OnError, m.DeadLetterTopic = DeadLetter, "customers" }, []string{`dead-letter topic "customers" is one of the read model's source topics`, "dead_letter_topic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := customerModel("profile")
			tc.edit(&m)
			reg, err := sr.NewClient(sr.URLs("http://127.0.0.1:1"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(Config{Model: m, StoreURL: "sqlite://unused.db", Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Registry: reg})
			if err == nil {
				t.Fatalf("New: got nil, want an error containing %q", tc.wants)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}
