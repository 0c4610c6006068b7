package source

import (
	"bytes"
	"fmt"
)

// COPY ... TO STDOUT in text format writes one line per row: columns
// separated by a tab, NULL as \N, and in a value every backslash, tab,
// newline, carriage return, backspace, form feed and vertical tab escaped
// with a backslash. The simple query protocol returns the same values
// unescaped; splitCopyLine undoes COPY's escaping so that the bytes handed
// to relation.DecodeText are exactly the bytes a SELECT would have returned
// (the escaping is the only difference: both are the type's output
// function under the same session settings).

// splitCopyLine splits one COPY text line (without its trailing newline)
// into fields, unescaping where needed. fields[i] is nil for NULL. An
// unescaped field aliases line; an escaped one is written into scratch,
// which is returned grown so the caller can reuse it. The fields are valid
// until line or scratch is reused.
func splitCopyLine(line []byte, fields [][]byte, scratch []byte) ([][]byte, []byte, error) {
	fields = fields[:0]
	scratch = scratch[:0]
	if bytes.IndexByte(line, '\\') < 0 {
		// The common case: nothing escaped and no NULL, so fields are the
		// tab-separated slices of line.
		for {
			end := bytes.IndexByte(line, '\t')
			if end < 0 {
				return append(fields, line), scratch, nil
			}
			fields = append(fields, line[:end])
			line = line[end+1:]
		}
	}
	// Escaped fields are appended to scratch; their offsets are recorded
	// first and the slices taken at the end, since appending may move it.
	type span struct{ field, from, to int }
	var spans [8]span
	escaped := spans[:0]
	for {
		end := bytes.IndexByte(line, '\t')
		field := line
		if end >= 0 {
			field = line[:end]
		}
		switch {
		case len(field) == 2 && field[0] == '\\' && field[1] == 'N':
			fields = append(fields, nil)
		case bytes.IndexByte(field, '\\') < 0:
			fields = append(fields, field)
		default:
			from := len(scratch)
			var err error
			if scratch, err = unescapeCopy(scratch, field); err != nil {
				return fields, scratch, fmt.Errorf("column %d: %w", len(fields)+1, err)
			}
			escaped = append(escaped, span{len(fields), from, len(scratch)})
			fields = append(fields, []byte{}) // placeholder, set below
		}
		if end < 0 {
			break
		}
		line = line[end+1:]
	}
	for _, sp := range escaped {
		fields[sp.field] = scratch[sp.from:sp.to:sp.to]
	}
	return fields, scratch, nil
}

// unescapeCopy appends field with COPY's text-format escapes undone: the
// ones COPY TO writes (\\ \b \f \n \r \t \v) and, to accept anything COPY
// FROM would, octal \ddd, hex \xhh and a backslash before any other byte
// (that byte itself).
func unescapeCopy(dst, field []byte) ([]byte, error) {
	for i := 0; i < len(field); i++ {
		c := field[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i == len(field) {
			return dst, fmt.Errorf("COPY value ends in a lone backslash")
		}
		c = field[i]
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'v':
			dst = append(dst, '\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for n := 1; n < 3 && i+1 < len(field) && field[i+1] >= '0' && field[i+1] <= '7'; n++ {
				i++
				v = v*8 + int(field[i]-'0')
			}
			dst = append(dst, byte(v))
		case 'x':
			v, n := 0, 0
			for n < 2 && i+1 < len(field) && isHex(field[i+1]) {
				i++
				v = v*16 + hexVal(field[i])
				n++
			}
			if n == 0 {
				dst = append(dst, 'x') // PostgreSQL's COPY FROM reads "\x" alone as "x"
			} else {
				dst = append(dst, byte(v))
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	default:
		return int(c-'A') + 10
	}
}
