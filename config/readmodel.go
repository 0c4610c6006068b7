package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/replicator/replicator/registry"
	"go.yaml.in/yaml/v3"
)

// Keys of a read model (`read_models[i].…`), for messages.
const (
	KeyReadModels = "read_models"
)

// on_error values of a read model.
const (
	OnErrorStop       = "stop"        // the read model stops at the record, offsets untouched
	OnErrorDeadLetter = "dead_letter" // the raw record goes to the dead-letter topic, then on
)

// readModelName is what a read model may be called: it becomes part of a
// consumer group id and of the default dead-letter topic.
var readModelName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,200}$`)

// ReadModel is one consumer-owned table built by `replicator sink` from one
// or more entity topics (docs/CONFIG.md, "Read models").
//
// Read models are decoded from the YAML file itself, not through viper:
// viper folds every map key to lower case, and column names are the
// consumer's own (case, spaces and order kept).
type ReadModel struct {
	// Name identifies the read model (consumer group replicator-sink-<name>,
	// its offsets in the store). Required.
	Name string
	// Store is the database URL: postgres://…, sqlite://path,
	// sqlite:///abs/path or mysql://user:pass@host:port/db. Required.
	// ${NAME} in it is replaced by the environment variable NAME, so a
	// password need not be written in the file.
	Store string
	// Table is the read-model table; default Name.
	Table string
	// Key is the table's primary key column(s). Required.
	Key []string
	// Sources are the entity topics writing the table; exactly one is the
	// owner.
	Sources []ReadModelSource
	// OnError is stop (default) or dead_letter.
	OnError string
	// DeadLetterTopic receives poison records with on_error: dead_letter;
	// default "<name>.dlq".
	DeadLetterTopic string
	// GiveUpAfter bounds how long a batch is retried while the store or the
	// schema registry is unavailable before the read model stops; 0
	// (default): retried until they are back.
	GiveUpAfter time.Duration
	// RebuildGCPercent is Go's GC target (as GOGC) while `replicator
	// rebuild` runs (0–1000; 0 leaves it alone); default
	// DefaultRebuildGCPercent.
	RebuildGCPercent int
}

// DefaultRebuildGCPercent is a read model's rebuild_gc_percent when unset:
// the rebuild-pg benchmark's CPU fell by a sixth against Go's 100, for a
// peak RSS about twice as high (bounded by two batches, not the topic).
const DefaultRebuildGCPercent = 300

// ReadModelSource is one entity topic of a read model.
type ReadModelSource struct {
	// Entity names an entity of `entities:` (its topic is read) or, when
	// the file has no such entity, is the topic name itself.
	Entity string
	// Topic is the topic read: the explicit topic: key, else resolved from
	// Entity.
	Topic string
	// Key lists the record fields giving the row's key, one per column of
	// ReadModel.Key, in that order. Fields are looked up in the value
	// record, then in the key record.
	Key []string
	// Owner marks the source whose live records are the table's rows.
	Owner bool
	// Columns are the columns this source writes, in file order.
	Columns []ReadModelColumn
}

// ReadModelColumn maps a record field to a column.
type ReadModelColumn struct {
	Name  string // column name, as written (case kept)
	Field string // record field
	Type  string // SQL type override; empty = derived from the Avro schema
}

// RedactedStore is the store URL with its password hidden.
func (m ReadModel) RedactedStore() string { return RedactStoreURL(m.Store) }

// parseReadModels decodes read_models from the YAML file's data (a
// file without the key: none). Every problem is returned, each naming its
// key.
func parseReadModels(data []byte) ([]ReadModel, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil
	}
	root := doc.Content[0]
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if strings.EqualFold(root.Content[i].Value, KeyReadModels) {
			list = root.Content[i+1]
		}
	}
	if list == nil || list.Kind == yaml.ScalarNode && list.Tag == "!!null" {
		return nil, nil
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: want a list of read models (line %d)", KeyReadModels, list.Line)
	}
	var errs []error
	bad := func(key string, n *yaml.Node, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s (line %d)", key, fmt.Sprintf(format, a...), n.Line))
	}
	models := make([]ReadModel, len(list.Content))
	for i, n := range list.Content {
		key := fmt.Sprintf("%s[%d]", KeyReadModels, i)
		if n.Kind != yaml.MappingNode {
			bad(key, n, "want a mapping with name, store, key and sources")
			continue
		}
		m := &models[i]
		m.RebuildGCPercent = -1
		eachPair(n, func(k string, v *yaml.Node) {
			switch k {
			case "name":
				m.Name = scalar(key+".name", v, bad)
			case "store":
				m.Store = expandEnv(key+".store", scalar(key+".store", v, bad), v, bad)
			case "table":
				m.Table = scalar(key+".table", v, bad)
			case "key":
				m.Key = names(key+".key", v, bad)
			case "on_error":
				m.OnError = scalar(key+".on_error", v, bad)
			case "dead_letter_topic":
				m.DeadLetterTopic = scalar(key+".dead_letter_topic", v, bad)
			case "give_up_after":
				m.GiveUpAfter = giveUpAfter(key+".give_up_after", v, bad)
			case "rebuild_gc_percent":
				m.RebuildGCPercent = gcPercent(key+".rebuild_gc_percent", v, bad)
			case "sources":
				if v.Kind != yaml.SequenceNode {
					bad(key+".sources", v, "want a list of sources")
					return
				}
				m.Sources = make([]ReadModelSource, len(v.Content))
				for j, sn := range v.Content {
					m.Sources[j] = readSource(fmt.Sprintf("%s.sources[%d]", key, j), sn, bad)
				}
			default:
				bad(key+"."+k, v, "unknown key (known: name, store, table, key, sources, on_error, dead_letter_topic, give_up_after, rebuild_gc_percent)")
			}
		})
	}
	return models, errors.Join(errs...)
}

type badFunc func(key string, n *yaml.Node, format string, a ...any)

// giveUpAfter reads a give-up bound as source.reconnect.give_up_after
// takes it: 0 (no limit) or a Go duration from 1s to 8760h.
func giveUpAfter(key string, n *yaml.Node, bad badFunc) time.Duration {
	v := scalar(key, n, bad)
	if v == "" || v == "0" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d > 0 && d < time.Second) || d > 365*24*time.Hour {
		bad(key, n, "%q is not 0s (keep trying) or a duration from 1s to 8760h such as 10m", v)
		return 0
	}
	return d
}

// gcPercent reads a GC target of 0 to 1000; unset is -1 (the default is
// applied later).
func gcPercent(key string, n *yaml.Node, bad badFunc) int {
	v := scalar(key, n, bad)
	pct, err := strconv.Atoi(v)
	if err != nil || pct < 0 || pct > 1000 {
		bad(key, n, "%q must be a whole number from 0 to 1000 (Go's GC target during a rebuild, as GOGC; 0 leaves it alone)", v)
		return -1
	}
	return pct
}

func readSource(key string, n *yaml.Node, bad badFunc) ReadModelSource {
	var s ReadModelSource
	if n.Kind != yaml.MappingNode {
		bad(key, n, "want a mapping with entity, key and columns")
		return s
	}
	eachPair(n, func(k string, v *yaml.Node) {
		switch k {
		case "entity":
			s.Entity = scalar(key+".entity", v, bad)
		case "topic":
			s.Topic = scalar(key+".topic", v, bad)
		case "key":
			s.Key = names(key+".key", v, bad)
		case "owner":
			if err := v.Decode(&s.Owner); err != nil || v.Kind != yaml.ScalarNode {
				bad(key+".owner", v, "want true or false")
			}
		case "columns":
			if v.Kind != yaml.MappingNode {
				bad(key+".columns", v, "want a mapping of column: field or column: {field: F, type: \"SQL TYPE\"}")
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				name, val := v.Content[i].Value, v.Content[i+1]
				ckey := key + ".columns." + name
				c := ReadModelColumn{Name: name}
				switch val.Kind {
				case yaml.ScalarNode:
					c.Field = val.Value
				case yaml.MappingNode:
					eachPair(val, func(k string, fv *yaml.Node) {
						switch k {
						case "field":
							c.Field = scalar(ckey+".field", fv, bad)
						case "type":
							c.Type = scalar(ckey+".type", fv, bad)
						default:
							bad(ckey+"."+k, fv, "unknown key (known: field, type)")
						}
					})
				default:
					bad(ckey, val, "want a field name or {field: F, type: \"SQL TYPE\"}")
					continue
				}
				s.Columns = append(s.Columns, c)
			}
		default:
			bad(key+"."+k, v, "unknown key (known: entity, topic, key, owner, columns)")
		}
	})
	return s
}

// eachPair calls f for each key/value of a mapping node, keys lower-cased
// (config keys are case-insensitive, as viper treats the rest of the file).
func eachPair(n *yaml.Node, f func(k string, v *yaml.Node)) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		f(strings.ToLower(n.Content[i].Value), n.Content[i+1])
	}
}

func scalar(key string, n *yaml.Node, bad badFunc) string {
	if n.Kind != yaml.ScalarNode {
		bad(key, n, "want a single value")
		return ""
	}
	return n.Value
}

// envRef is a ${NAME} reference to an environment variable. Only the
// braced form is expanded, so a '$' elsewhere in a URL stays as written.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces every ${NAME} in s with the environment variable
// NAME; one that is not set is an error naming key and variable (an empty
// password would fail later, far from its cause).
func expandEnv(key, s string, n *yaml.Node, bad badFunc) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		v, ok := os.LookupEnv(name)
		if !ok {
			bad(key, n, "environment variable %s (named by ${%s}) is not set", name, name)
		}
		return v
	})
}

// names is a name or a list of names.
func names(key string, n *yaml.Node, bad badFunc) []string {
	switch n.Kind {
	case yaml.ScalarNode:
		return []string{n.Value}
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			out = append(out, scalar(key, c, bad))
		}
		return out
	}
	bad(key, n, "want a name or a list of names")
	return nil
}

// applyReadModelDefaults fills Table, OnError, DeadLetterTopic and each
// source's Topic (from the entity of that name, if the file has one).
func (c *Config) applyReadModelDefaults() {
	topics := map[string]string{}
	for _, e := range c.Entities {
		topics[e.Name] = e.Topic
	}
	for i := range c.ReadModels {
		m := &c.ReadModels[i]
		if m.Table == "" {
			m.Table = m.Name
		}
		if m.OnError == "" {
			m.OnError = OnErrorStop
		}
		if m.RebuildGCPercent < 0 {
			m.RebuildGCPercent = DefaultRebuildGCPercent
		}
		if m.DeadLetterTopic == "" && m.Name != "" {
			m.DeadLetterTopic = m.Name + ".dlq"
		}
		if len(m.Sources) == 1 {
			m.Sources[0].Owner = true // a single source owns its rows
		}
		for j := range m.Sources {
			s := &m.Sources[j]
			if s.Topic != "" {
				continue
			}
			if t, ok := topics[s.Entity]; ok {
				s.Topic = t
			} else {
				s.Topic = s.Entity
			}
		}
	}
}

func (c *Config) validateReadModels() []error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	names := map[string]int{}
	// Topics that carry entities: a dead-letter topic must be none of
	// them, or poison records would land among the entity records (and,
	// for a read model's own source, be consumed again: a loop).
	entityTopics := map[string]string{}
	for i, e := range c.Entities {
		entityTopics[e.Topic] = fmt.Sprintf("%s[%d]", KeyEntities, i)
	}
	for i, m := range c.ReadModels {
		for j, s := range m.Sources {
			if _, ok := entityTopics[s.Topic]; !ok {
				entityTopics[s.Topic] = fmt.Sprintf("%s[%d].sources[%d]", KeyReadModels, i, j)
			}
		}
	}
	// Two read models writing one table would delete each other's rows
	// and a rebuild of one would swap the other's table away.
	tables := map[[2]string]int{}
	for i, m := range c.ReadModels {
		key := fmt.Sprintf("%s[%d]", KeyReadModels, i)
		if !readModelName.MatchString(m.Name) {
			bad(key+".name", "%q must be 1-200 characters of letters, digits, '.', '_', '-' (it names the consumer group replicator-sink-<name>)", m.Name)
		} else if j, dup := names[m.Name]; dup {
			bad(key+".name", "%q is already used by %s[%d]", m.Name, KeyReadModels, j)
		}
		names[m.Name] = i
		if err := checkStoreURL(m.Store); err != nil {
			bad(key+".store", "%v", err)
		}
		if m.Table == "" {
			bad(key+".table", "required")
		} else if j, dup := tables[[2]string{m.Store, foldName(m.Store, m.Table)}]; dup {
			bad(key+".table", "%q in the same store is already the table of %s[%d] (%s): each read model needs a table of its own", m.Table, KeyReadModels, j, c.ReadModels[j].Name)
		} else {
			tables[[2]string{m.Store, foldName(m.Store, m.Table)}] = i
		}
		if len(m.Key) == 0 {
			bad(key+".key", "required: the table's primary key column(s)")
		}
		keyCols := map[string]int{}
		for j, k := range m.Key {
			if k == "" {
				bad(key+".key", "empty column name")
			}
			if _, dup := keyCols[k]; dup {
				bad(key+".key", "column %q listed twice", k)
			}
			keyCols[k] = j
		}
		switch m.OnError {
		case OnErrorStop, OnErrorDeadLetter:
		default:
			bad(key+".on_error", "%q is not one of %s, %s", m.OnError, OnErrorStop, OnErrorDeadLetter)
		}
		if m.OnError == OnErrorDeadLetter && (!topicName.MatchString(m.DeadLetterTopic) || m.DeadLetterTopic == "." || m.DeadLetterTopic == "..") {
			bad(key+".dead_letter_topic", "%q is not a legal Kafka topic name (1-249 letters, digits, '.', '_', '-')", m.DeadLetterTopic)
		} else if m.OnError == OnErrorDeadLetter {
			if why, ok := reservedTopic(m.DeadLetterTopic); ok {
				bad(key+".dead_letter_topic", "%q is %s: poison records must not be written there; name another topic (default <name>.dlq)", m.DeadLetterTopic, why)
			} else if where, ok := entityTopics[m.DeadLetterTopic]; ok {
				bad(key+".dead_letter_topic", "%q is an entity topic (%s): poison records would be written among its records; name another topic (default <name>.dlq)", m.DeadLetterTopic, where)
			}
		}
		if len(m.Sources) == 0 {
			bad(key+".sources", "at least one source is required, e.g.\n  sources:\n    - entity: customers\n      key: id\n      columns: {name: name}")
			continue
		}
		owners := 0
		written := map[string]string{} // column → source key writing it
		folded := map[string]string{}  // column as the store compares it → the column as written
		for _, k := range m.Key {
			folded[foldName(m.Store, k)] = k
		}
		for j, s := range m.Sources {
			skey := fmt.Sprintf("%s.sources[%d]", key, j)
			if s.Owner {
				owners++
			}
			if s.Entity == "" && s.Topic == "" {
				bad(skey+".entity", "required: an entity of %s, or the topic name (or set topic:)", KeyEntities)
			} else if !topicName.MatchString(s.Topic) {
				bad(skey+".topic", "%q is not a legal Kafka topic name", s.Topic)
			}
			if len(s.Key) != len(m.Key) {
				bad(skey+".key", "lists %d field(s) but %s.key has %d column(s): give one record field per key column, in order", len(s.Key), key, len(m.Key))
			}
			for _, f := range s.Key {
				if f == "" {
					bad(skey+".key", "empty field name")
				}
			}
			for _, col := range s.Columns {
				ckey := skey + ".columns." + col.Name
				if col.Name == "" {
					bad(skey+".columns", "empty column name")
					continue
				}
				if col.Field == "" {
					bad(ckey, "the record field is missing")
				}
				if k, isKey := keyCols[col.Name]; isKey {
					// A key column among the columns is allowed (it reads
					// naturally) only if it is the same field as the key.
					if k < len(s.Key) && s.Key[k] != col.Field {
						bad(ckey, "is key column %q: it must be field %q as in %s.key, not %q", col.Name, s.Key[k], skey, col.Field)
					}
					continue
				}
				if other, dup := written[col.Name]; dup {
					bad(ckey, "column %q is already written by %s: each column belongs to one source", col.Name, other)
				} else if same, dup := folded[foldName(m.Store, col.Name)]; dup {
					bad(ckey, "column %q and column %q are one column in this store (SQLite and MySQL compare column names without case): rename one", col.Name, same)
				}
				written[col.Name] = skey
				folded[foldName(m.Store, col.Name)] = col.Name
			}
		}
		if owners != 1 {
			bad(key+".sources", "exactly one source must be owner: true (its live records are the table's rows), found %d", owners)
		}
	}
	return errs
}

// reservedTopic reports whether topic belongs to Kafka or to replicator
// itself, and whose it is: Kafka's internal topics start with "__"
// (__consumer_offsets, __transaction_state; a producer may not write
// them, or corrupts them if it can), and the embedded registry keeps its
// schemas in [registry.SchemasTopic], where a foreign record would break
// its replay.
func reservedTopic(topic string) (string, bool) {
	switch {
	case strings.HasPrefix(topic, "__"):
		return "a Kafka internal topic (names starting with __ are the broker's)", true
	case topic == registry.SchemasTopic:
		return "the embedded schema registry's own topic", true
	}
	return "", false
}

// foldName is name as the store compares identifiers: SQLite and MySQL
// ignore case in column names (and MySQL, on most systems, in table
// names); PostgreSQL keeps the case of quoted names.
func foldName(store, name string) string {
	if strings.HasPrefix(store, "sqlite:") || strings.HasPrefix(store, "mysql:") {
		return strings.ToLower(name)
	}
	return name
}

// checkStoreURL accepts the store URLs the sink can open.
func checkStoreURL(s string) error {
	if s == "" {
		return errors.New("required: postgres://user@host:5432/db, sqlite://path, sqlite:///abs/path or mysql://user:pass@host:3306/db")
	}
	// A password holding a character a URL gives a meaning to ('#' starts
	// a fragment, '/' a path, '?' a query) cuts the URL short, and the
	// message would be about what is left.
	const encode = ": a password holding # / ? @ : or % must be percent-encoded (%23 %2F %3F %40 %3A %25), in the value of a ${NAME} too"
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL%s", RedactStoreURL(s), encode)
	}
	switch u.Scheme {
	case "postgres", "postgresql", "mysql":
		if u.Host == "" {
			return fmt.Errorf("%q has no host%s", RedactStoreURL(s), encode)
		}
		if strings.Trim(u.Path, "/") == "" {
			return fmt.Errorf("%q names no database (…/dbname)%s", RedactStoreURL(s), encode)
		}
	case "sqlite":
		if u.Host == "" && u.Path == "" && u.Opaque == "" {
			return fmt.Errorf("%q names no file", s)
		}
	default:
		return fmt.Errorf("%q: scheme %q is not one of postgres, sqlite, mysql", RedactStoreURL(s), u.Scheme)
	}
	return nil
}
