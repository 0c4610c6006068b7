package sink

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// OnError is what a read model does with a poison record.
type OnError int

const (
	// Stop ends the read model at the record: the error names topic,
	// partition, offset and cause, and its offsets stay before it.
	Stop OnError = iota
	// DeadLetter produces the raw record to the dead-letter topic with the
	// error in headers, waits for the acknowledgement, and moves on.
	DeadLetter
)

func (o OnError) String() string {
	if o == DeadLetter {
		return "dead_letter"
	}
	return "stop"
}

// ReadModel is one read-model table and the topics that write it.
type ReadModel struct {
	// Name identifies the read model: consumer group
	// replicator-sink-<Name>, and the key of its offsets and side rows in
	// the store.
	Name string
	// Table is the read-model table (one identifier, quoted as needed).
	Table string
	// Key are the table's primary-key columns.
	Key []string
	// Sources write the table; exactly one is the Owner.
	Sources []Source
	// OnError is what a poison record does; default Stop.
	OnError OnError
	// DeadLetterTopic receives poison records with DeadLetter.
	DeadLetterTopic string
}

// Source is an entity topic writing some columns of a read model.
type Source struct {
	Topic string
	// Key are the record fields giving the row's key, one per
	// ReadModel.Key column in order: value-record fields first, then
	// key-record fields. An owner's must be key-record fields.
	Key []string
	// Owner: the table holds exactly the rows whose owner record is live.
	Owner bool
	// Columns this source writes (key columns among them are ignored: the
	// key comes from Key).
	Columns []Column
}

// Column maps a record field to a column.
type Column struct {
	Name  string
	Field string
	// Type overrides the SQL type derived from the Avro schema.
	Type string
}

// validate rejects what the sink cannot run, before anything connects.
// config validates the same file with key names; this guards other callers.
func (m *ReadModel) validate() error {
	var errs []error
	if m.Name == "" || m.Table == "" || len(m.Key) == 0 {
		errs = append(errs, errors.New("name, table and key are required"))
	}
	owners := 0
	topics := map[string]bool{}
	for i, s := range m.Sources {
		if s.Owner {
			owners++
		}
		if topics[s.Topic] {
			errs = append(errs, fmt.Errorf("source %d: topic %q is read by another source of the read model", i, s.Topic))
		}
		topics[s.Topic] = true
		if len(s.Key) != len(m.Key) {
			errs = append(errs, fmt.Errorf("source %d (%s): %d key field(s) for %d key column(s)", i, s.Topic, len(s.Key), len(m.Key)))
		}
	}
	if owners != 1 {
		errs = append(errs, fmt.Errorf("exactly one source must be the owner, found %d", owners))
	}
	if m.OnError == DeadLetter && m.DeadLetterTopic == "" {
		errs = append(errs, errors.New("dead_letter needs a dead-letter topic"))
	}
	if m.OnError == DeadLetter && topics[m.DeadLetterTopic] {
		// A poison record produced back into the topic it came from would
		// be consumed again, poison again: a loop that fills the topic.
		errs = append(errs, fmt.Errorf("dead-letter topic %q is one of the read model's source topics: name another (dead_letter_topic; default <name>.dlq)", m.DeadLetterTopic))
	}
	for _, own := range []string{offsetsTable, sideTable, failuresTable} {
		// Compared without case: SQLite and MySQL fold table names.
		if strings.EqualFold(m.Table, own) {
			errs = append(errs, fmt.Errorf("table %q is the sink's own table (it keeps the read models' offsets, side rows and stops in the store): give the read model another table (table:)", m.Table))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("read model %q: %w", m.Name, err)
	}
	return nil
}

// modelNameLen is the longest read-model name the sink's tables hold
// (MySQL: their read_model column is varchar(modelNameLen)).
const modelNameLen = 200

// checkNames refuses names the store d would not keep as given, before
// anything is created: the read model's table, the tables a rebuild names
// after it (<table>__rebuild, <table>__old), its columns, and, on MySQL,
// the read model's name (a rebuild's with its suffix) in the sink's tables.
func (m *ReadModel) checkNames(d dialect) error {
	lim := d.identLimit()
	var errs []error
	// The longest of the names a read model's table lends is the rebuild's
	// (<table>__rebuild; <table>__old is shorter).
	if shadow := m.Table + rebuildSuffix; !lim.fits(shadow) {
		unit := "bytes"
		if lim.chars {
			unit = "characters"
		}
		errs = append(errs, fmt.Errorf("table %q: the table a rebuild builds beside it, %q, is %s, over %s's limit of %s for a name: choose a table: of at most %d %s",
			m.Table, shadow, lim.size(shadow), d.name(), lim, lim.n-len(rebuildSuffix), unit))
	}
	seen := map[string]bool{}
	check := func(col string) {
		if !seen[col] && !lim.fits(col) {
			errs = append(errs, fmt.Errorf("column %q of table %q is %s, over %s's limit of %s for a name: rename it in the read model's columns:",
				col, m.Table, lim.size(col), d.name(), lim))
		}
		seen[col] = true
	}
	for _, k := range m.Key {
		check(k)
	}
	for _, s := range m.Sources {
		for _, c := range s.Columns {
			check(c.Name)
		}
	}
	if _, ok := d.(mysqlDialect); ok {
		if n := utf8.RuneCountInString(m.Name + rebuildSuffix); n > modelNameLen {
			errs = append(errs, fmt.Errorf("name is %d characters with a rebuild's suffix %s, over the %d the sink's tables hold in MySQL: choose a shorter name:",
				n, rebuildSuffix, modelNameLen))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("read model %q: %w", m.Name, err)
	}
	return nil
}

// column is a compiled table column.
type column struct {
	name     string
	typ      fieldType
	override string // SQL type from the config, wins over typ
	source   int    // the source writing it; -1 for a key column
}

// plan is a read model compiled against its topics' schemas.
type plan struct {
	model   *ReadModel
	columns []column // key columns first, in Key order
	owner   int      // index of the owner source
	sources []sourcePlan
}

// sourcePlan is how one source's records become row values.
type sourcePlan struct {
	topic     string
	keyFields []fieldRef // one per key column
	cols      []int      // indexes into plan.columns this source writes
	fields    []fieldRef // record field of each of cols
	decoder   *recordDecoder
	// ahead decodes the next batch while decoder's goroutine writes the
	// current one (Rebuild): a decoder is used by one goroutine at a time.
	ahead *recordDecoder
}

// fieldRef locates a field in the key or the value record.
type fieldRef struct {
	name    string
	fromKey bool
	// slot is the field's in a decoded record (fields.at): the reader
	// schema, and so its slots, are fixed when the decoder is built.
	slot int
}

func (p *plan) keyCount() int { return len(p.model.Key) }
