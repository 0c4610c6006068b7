package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// schemaRegistry is what the sink asks of a Confluent-compatible registry
// (*sr.Client has it).
type schemaRegistry interface {
	SchemaByID(ctx context.Context, id int) (sr.Schema, error)
	SchemaByVersion(ctx context.Context, subject string, version int) (sr.SubjectSchema, error)
}

// PoisonError is a record the read model cannot decode or the store
// rejects: what on_error applies to.
type PoisonError struct {
	Topic     string
	Partition int32
	Offset    int64
	Err       error
	rec       *kgo.Record // the raw record, for the dead-letter topic
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("record at topic %s partition %d offset %d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *PoisonError) Unwrap() error { return e.Err }

// errUndecodable marks a record-level decoding failure (bad framing,
// unknown schema id, bytes that do not match their schema): poison, as
// opposed to a registry outage or a schema the read model cannot read at
// all, which stop the read model whatever on_error says.
var errUndecodable = errors.New("undecodable record")

// recordDecoder decodes one topic's keys and values: the writer schema is
// fetched by the id in the Confluent header (cached), resolved against a
// reader schema holding only the fields the read model needs. It is used by
// one goroutine (its read model's).
type recordDecoder struct {
	reg   schemaRegistry
	api   avro.API
	topic string
	key   half
	value half
	r     *avro.Reader // the direct reading's, reset for each record
	slab  []any        // decoded records' slots are cut from it (fewer allocations)
}

// half is the key or the value side of a topic.
type half struct {
	subject  string
	reader   *avro.RecordSchema
	readerID int // the latest id at start: a newer writer lacking a field has dropped it
	fields   map[string]fieldType
	index    map[string]int         // reader field name → its slot in a decoded record
	all      []string               // every field of the subject's latest schema, kept or not (for messages)
	resolved map[int]*writerReading // by writer schema id
}

// writerReading is how the records of one writer schema id are read into
// the reader's fields.
type writerReading struct {
	schema avro.Schema // resolved: what hamba/avro decodes into a map
	ops    []fieldOp   // the direct reading; nil when only the map path reads it (fastdecode.go)
	// line writes its records as COPY lines into columns of lineTypes
	// (copyline.go); nil when it cannot. Planned by the first record of
	// a batch decoded ahead for those types, again when they change.
	line      *lineEncoder
	lineTypes []string
	linePlan  bool // line planned for lineTypes
}

// maxValueBytes bounds one string or bytes value the sink decodes: the
// largest a record may carry (kafka.max_message_bytes is at most 64 MiB),
// so that no value a producer could send is refused as too long, while a
// corrupt length prefix cannot make a decoder allocate without bound.
const maxValueBytes = 64 << 20

// newAPI is the hamba/avro configuration the sink decodes with.
func newAPI() avro.API { return avro.Config{MaxByteSliceSize: maxValueBytes}.Freeze() }

// newRecordDecoder reads the topic's latest key and value schemas and
// builds the readers: the whole key record, and the value fields named in
// need that the value record has (the others are looked up in the key).
func newRecordDecoder(ctx context.Context, reg schemaRegistry, api avro.API, topic string, need []string) (*recordDecoder, error) {
	d := &recordDecoder{reg: reg, api: api, topic: topic, r: avro.NewReader(nil, 0, avro.WithReaderConfig(api))}
	var err error
	if d.key, err = readerHalf(ctx, reg, topic+"-key", nil); err != nil {
		return nil, err
	}
	if d.value, err = readerHalf(ctx, reg, topic+"-value", need); err != nil {
		return nil, err
	}
	return d, nil
}

// clone returns a decoder of the same reader for another goroutine: the
// readers are shared (read-only), the caches and buffers are its own.
func (d *recordDecoder) clone() *recordDecoder {
	c := *d
	c.key.resolved = map[int]*writerReading{}
	c.value.resolved = map[int]*writerReading{}
	c.r = avro.NewReader(nil, 0, avro.WithReaderConfig(d.api))
	c.slab = nil
	return &c
}

// readerHalf builds the reader of subject's latest version, keeping only
// the fields in keep (all when keep is nil).
func readerHalf(ctx context.Context, reg schemaRegistry, subject string, keep []string) (half, error) {
	latest, err := reg.SchemaByVersion(ctx, subject, -1)
	var re *sr.ResponseError
	if errors.As(err, &re) && re.ErrorCode == sr.ErrSubjectNotFound.Code {
		return half{}, fmt.Errorf("subject %q is not in the registry: no producer has written the topic yet (is `replicator run` exporting it?), or the source's entity: or topic: is misspelled (%w)", subject, err)
	}
	if err != nil {
		return half{}, fmt.Errorf("read latest schema of subject %q: %w", subject, err)
	}
	text := latest.Schema.Schema
	var all []string
	if keep != nil {
		if text, all, err = keepFields(text, keep); err != nil {
			return half{}, fmt.Errorf("subject %q: %w", subject, err)
		}
	}
	s, err := parseSchema(text)
	if err != nil {
		return half{}, fmt.Errorf("subject %q version %d: %w", subject, latest.Version, err)
	}
	rec, ok := s.(*avro.RecordSchema)
	if !ok {
		return half{}, fmt.Errorf("subject %q: the schema is a %s, want a record", subject, s.Type())
	}
	h := half{subject: subject, reader: rec, readerID: latest.ID, fields: map[string]fieldType{}, index: map[string]int{}, resolved: map[int]*writerReading{}}
	for i, f := range rec.Fields() {
		h.fields[f.Name()] = typeOf(f.Type())
		h.index[f.Name()] = i
		if keep == nil {
			all = append(all, f.Name())
		}
	}
	h.all = all
	return h, nil
}

// parseSchema parses with a cache of its own: versions of one subject
// reuse record names with different shapes.
func parseSchema(text string) (avro.Schema, error) {
	return avro.ParseWithCache(text, "", &avro.SchemaCache{})
}

// keepFields filters a record schema's JSON to the named fields, and
// returns the names of all its fields.
func keepFields(text string, keep []string) (string, []string, error) {
	var rec map[string]any
	if err := json.Unmarshal([]byte(text), &rec); err != nil {
		return "", nil, fmt.Errorf("schema is not a JSON record: %w", err)
	}
	fields, _ := rec["fields"].([]any)
	want := map[string]bool{}
	for _, k := range keep {
		want[k] = true
	}
	var out []any
	var all []string
	for _, f := range fields {
		m, ok := f.(map[string]any)
		if !ok {
			continue
		}
		all = append(all, fmt.Sprint(m["name"]))
		if want[fmt.Sprint(m["name"])] {
			out = append(out, f)
		}
	}
	if out == nil {
		out = []any{}
	}
	rec["fields"] = out
	b, err := json.Marshal(rec)
	return string(b), all, err
}

// has reports whether the topic's key or value record has field.
func (d *recordDecoder) has(field string, inKey bool) (fieldType, int, bool) {
	h := &d.value
	if inKey {
		h = &d.key
	}
	t, ok := h.fields[field]
	return t, h.index[field], ok
}

// fieldNames lists every field of the key (or value) record, for
// messages: all of the topic's, not only those the reader kept.
func (d *recordDecoder) fieldNames(inKey bool) string {
	h := d.value
	if inKey {
		h = d.key
	}
	names := append([]string(nil), h.all...)
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// decodeKey and decodeValue return the reader's fields of a framed record.
func (d *recordDecoder) decodeKey(ctx context.Context, b []byte) (fields, error) {
	return d.decode(ctx, &d.key, b)
}

func (d *recordDecoder) decodeValue(ctx context.Context, b []byte) (fields, error) {
	return d.decode(ctx, &d.value, b)
}

// decode reads a framed record directly into the reader's slots when the
// writer schema allows it (fastdecode.go), else, or when the direct
// reading meets bytes it cannot read, through hamba/avro's map decoding,
// which then decides (errors, and what truncated bytes yield).
func (d *recordDecoder) decode(ctx context.Context, h *half, b []byte) (fields, error) {
	var hdr sr.ConfluentHeader
	id, payload, err := hdr.DecodeID(b)
	if err != nil {
		return fields{}, fmt.Errorf("%w: no Confluent wire-format header (magic byte 0 and a 4-byte schema id)", errUndecodable)
	}
	wr, err := d.resolve(ctx, h, id)
	if err != nil {
		return fields{}, err
	}
	vals := d.slots(len(h.reader.Fields()))
	if wr.ops != nil && d.readDirect(wr.ops, payload, vals) {
		return fields{h: h, vals: vals}, nil
	}
	clear(vals)
	m, err := d.decodeMap(h, wr.schema, id, payload)
	if err != nil {
		return fields{}, err
	}
	for i, f := range h.reader.Fields() {
		vals[i] = m[f.Name()]
	}
	return fields{h: h, vals: vals}, nil
}

// decodeMap is the reference decoding: hamba/avro into a map through the
// resolved schema, unions unwrapped.
func (d *recordDecoder) decodeMap(h *half, s avro.Schema, id int, payload []byte) (map[string]any, error) {
	out := make(map[string]any, len(h.fields))
	if err := d.api.Unmarshal(s, payload, &out); err != nil {
		return nil, fmt.Errorf("%w: schema id %d (subject %s): %v", errUndecodable, id, h.subject, err)
	}
	for _, f := range h.reader.Fields() {
		if v, ok := out[f.Name()]; ok {
			out[f.Name()] = unwrapUnions(f.Type(), v)
		}
	}
	return out, nil
}

// resolve returns the schema that reads writer id's bytes into the
// reader's shape, fetching and checking it once per id.
func (d *recordDecoder) resolve(ctx context.Context, h *half, id int) (*writerReading, error) {
	if wr, ok := h.resolved[id]; ok {
		return wr, nil
	}
	ws, err := d.reg.SchemaByID(ctx, id) // an outage is retried with the batch (processRetrying)
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && (re.ErrorCode == sr.ErrSchemaNotFound.Code || re.StatusCode == 404) {
			return nil, fmt.Errorf("%w: schema id %d is unknown to the registry", errUndecodable, id)
		}
		if re != nil {
			// Its message alone ("unavailable") hides that it was the
			// registry's answer, and which.
			return nil, fmt.Errorf("fetch schema id %d of subject %s: the registry answered HTTP %d: %w", id, h.subject, re.StatusCode, err)
		}
		return nil, fmt.Errorf("fetch schema id %d of subject %s: %w", id, h.subject, err)
	}
	writer, err := parseSchema(ws.Schema)
	if err != nil {
		return nil, fmt.Errorf("%w: schema id %d does not parse: %v", errUndecodable, id, err)
	}
	wrec, ok := writer.(*avro.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("%w: schema id %d is a %s, want a record", errUndecodable, id, writer.Type())
	}
	has := map[string]bool{}
	for _, f := range wrec.Fields() {
		has[f.Name()] = true
	}
	for _, f := range h.reader.Fields() {
		if has[f.Name()] {
			continue
		}
		if id > h.readerID {
			return nil, &SchemaError{Subject: h.subject, ID: id, Field: f.Name(), Msg: "is gone from the newer schema: the read model needs it (remove it from the read model, or restore the field)"}
		}
		if !f.HasDefault() {
			return nil, &SchemaError{Subject: h.subject, ID: id, Field: f.Name(), Msg: "is missing in this older schema and has no default"}
		}
	}
	s, err := avro.NewSchemaCompatibility().Resolve(h.reader, writer)
	if err != nil {
		return nil, &SchemaError{Subject: h.subject, ID: id, Msg: fmt.Sprintf("cannot be read as the read model's fields: %v", err)}
	}
	wr := &writerReading{schema: s, ops: directOps(h.reader, wrec)}
	h.resolved[id] = wr
	return wr, nil
}

// SchemaError is a writer schema the read model cannot read: it stops the
// read model whatever on_error says (every later record of that schema
// would fail the same way).
type SchemaError struct {
	Subject string
	ID      int
	Field   string
	Msg     string
}

func (e *SchemaError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("subject %s schema id %d: field %q %s", e.Subject, e.ID, e.Field, e.Msg)
	}
	return fmt.Sprintf("subject %s schema id %d %s", e.Subject, e.ID, e.Msg)
}
