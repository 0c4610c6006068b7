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
		{"failures table", func(m *ReadModel) { m.Table = "replicator_sink_failures" }, []string{`table "replicator_sink_failures" is the sink's own table`}},
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

// A read model that does not fit its topics stops at start with every
// mistake named: a misspelled field, with the fields the topic really has
// (all of them, not only those the read model reads), and a misspelled
// topic, with what to check.
func TestRunNamesMisspelledFieldsAndTopics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.topic("customers", customersKey, customersValue)
	w.put(cust(1, "ann", nil))
	m := customerModel("profile")
	m.Sources[0].Columns[1].Field = "nmae"
	m.Sources = append(m.Sources, Source{Topic: "loyalty", Key: []string{"customer_id"}, Columns: []Column{{Name: "points", Field: "points"}}})
	err := waitStopped(t, e.start(m, sqliteStore().fresh(t)))
	if err == nil {
		t.Fatal("Run: got nil, want the read model stopped")
	}
	for _, want := range []string{
		`read model profile`,
		`column "display_name" reads field "nmae", which its records lack (value fields: id, name, tier; key fields: id)`,
		`subject "loyalty-key" is not in the registry`,
		`entity: or topic: is misspelled`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run: error %q lacks %q", err, want)
		}
	}
}
