// Package mapping turns a published PostgreSQL table into an entity: the Avro
// key and value schemas registered for its topic, and the Avro binary
// encoding of its rows. It also decodes those records again, for tests and
// for the sink.
//
// Everything here is a pure function of its inputs: no connections, no
// logging, no package state. Avro decoding goes through a [Codec], which owns
// one frozen avro.API (never avro.DefaultConfig or hamba's global schema
// cache).
//
// # Types
//
// Each [relation.Kind] maps to one Avro type:
//
//	Int16, Int32        int
//	Int64               long
//	Float32             float
//	Float64             double
//	Numeric(p,s)        {"type":"bytes","logicalType":"decimal","precision":p,"scale":s}
//	Numeric (no p,s)    string (PostgreSQL's text, "NaN" included) or double: see [Options]
//	Text, JSON, Enum    string
//	Bool                boolean
//	Bytes               bytes
//	UUID                {"type":"string","logicalType":"uuid"}
//	Date                {"type":"int","logicalType":"date"}
//	Time                {"type":"long","logicalType":"time-micros"}
//	Timestamp           {"type":"long","logicalType":"local-timestamp-micros"}
//	TimestampTZ         {"type":"long","logicalType":"timestamp-micros"}
//	Array of T          {"type":"array","items":["null",T]} (elements may be NULL)
//
// A nullable column is the union ["null",T] with "default":null, always in
// that order, so a field added later is backward compatible. Key columns must
// be NOT NULL, so key fields are never unions. Columns of kind
// [relation.Unsupported] (and arrays of them) are refused by [NewEntity] until
// they are excluded from the entity or exported as text with as_string:
// ([ApplyOverrides]).
//
// # Values without an Avro form
//
// Float NaN and infinities are carried as IEEE values. A value that the
// field's Avro type cannot hold is an encoding error naming the column: NaN
// in a numeric(p,s), a timestamp past 294247 AD, an unconstrained numeric
// beyond a double in [NumericAsDouble] mode. Infinite dates and timestamps
// never get here: relation's decoding refuses them ([relation.ErrInfinity]).
// Nothing is clamped or replaced; the way out is as_string:, which exports
// PostgreSQL's text (docs/ARCHITECTURE.md lists every edge).
//
// # Names
//
// Avro names must match [A-Za-z_][A-Za-z0-9_]*. A PostgreSQL identifier is
// sanitised by replacing every other character with "_" (one "_" per
// character, so "größe" becomes "gr__e") and prefixing "_" when it starts with
// a digit; an empty identifier becomes "_". When a field name differs from its
// column name, the field carries the column name in the custom property
// "pg.column". Two columns of one record whose sanitised names collide are
// an error.
//
// A record name or namespace part that would be an Avro primitive type name
// (null, boolean, int, long, float, double, bytes, string) gets a "_"
// suffix: the specification forbids defining a primitive name in any
// namespace, and python-avro loops on them, so a table named "int" is the
// record replicator.public.int_. Schema keywords (record, enum, error, map,
// …) are valid names and are kept, so that existing topics of a table named
// "error" keep their record name. Field
// names are not type names: a column "int" stays the field "int", as the
// specification allows. The rule is a pure function of the names, so a
// schema is the same on every run.
//
// For an entity named N over the table S.T:
//
//	value record   replicator.<sanitised S>.<sanitised N>
//	key record     replicator.<sanitised S>.<sanitised N>_key
//	subjects       <topic>-key and <topic>-value (TopicNameStrategy)
//
// Value fields follow the table's attribute order whatever order the
// configuration lists them in; key fields follow the configured key order
// (the primary key's order when none is configured).
//
// # Wire format
//
// [Entity.AppendKey] and [Entity.AppendValue] write the Avro binary encoding
// without any header. [AppendConfluentHeader] prepends the Confluent
// schema-registry framing (magic byte 0 and the 4-byte big-endian schema id)
// and [SplitConfluent] removes it. A delete is a tombstone: the key with a
// nil value; this package never encodes one.
package mapping
