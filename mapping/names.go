package mapping

import "strings"

// avroName sanitises a PostgreSQL identifier into an Avro name matching
// [A-Za-z_][A-Za-z0-9_]*: every other character (rune) becomes "_", and a
// leading digit gets a "_" prefix. The empty string becomes "_".
func avroName(ident string) string {
	if ident == "" {
		return "_"
	}
	valid := true
	for i := 0; i < len(ident); i++ {
		if !nameChar(ident[i]) {
			valid = false
			break
		}
	}
	if valid && !isDigit(ident[0]) {
		return ident
	}
	var b strings.Builder
	b.Grow(len(ident) + 1)
	if isDigit(ident[0]) {
		b.WriteByte('_')
	}
	for _, r := range ident {
		if r < 0x80 && nameChar(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func nameChar(c byte) bool {
	return c == '_' || isDigit(c) || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// reservedTypeNames are the names a named type (record, enum, fixed) or a
// namespace part must not take: the Avro specification forbids defining a
// primitive type name in any namespace (python-avro recurses forever
// resolving a record named "int"). Schema keywords such as "record",
// "error" or "map" are allowed by the specification and are plausible
// table names: renaming them would change the record name of existing
// topics, which a full compatibility check refuses, so they keep their
// name.
var reservedTypeNames = map[string]bool{
	"null": true, "boolean": true, "int": true, "long": true, "float": true,
	"double": true, "bytes": true, "string": true,
}

// avroTypeName is [avroName] for a named type or a namespace part: a
// reserved name gets a "_" suffix ("int" becomes "int_"). Field names are
// not type names and keep [avroName]: the specification allows a field
// named "int", and renaming it would change existing schemas.
func avroTypeName(ident string) string {
	n := avroName(ident)
	if reservedTypeNames[n] {
		return n + "_"
	}
	return n
}

// namespace is the Avro namespace of every record of a PostgreSQL schema.
func namespace(pgSchema string) string { return "replicator." + avroTypeName(pgSchema) }
