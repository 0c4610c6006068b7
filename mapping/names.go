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

// namespace is the Avro namespace of every record of a PostgreSQL schema.
func namespace(pgSchema string) string { return "replicator." + avroName(pgSchema) }
