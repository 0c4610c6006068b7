package relation

import (
	"bytes"
	"strconv"
)

// parseArray decodes array_out text of one dimension (see scanArray) into
// []any, every element decoded with [DecodeText]; a NULL element is nil.
func parseArray(elem *Type, s []byte) ([]any, error) {
	var out []any
	if len(s) > 2 {
		out = make([]any, 0, countElements(s))
	} else {
		out = []any{}
	}
	_, err := scanArray(elem, s, func(el []byte, null bool) error {
		if null {
			out = append(out, nil)
			return nil
		}
		v, err := DecodeText(elem, el)
		if err != nil {
			return &elementError{index: len(out) + 1, err: err}
		}
		out = append(out, v)
		return nil
	})
	if cb, ok := err.(*callbackError); ok {
		return nil, cb.err
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// countElements bounds the element count of array text from above: quoted
// elements may hold commas.
func countElements(s []byte) int { return bytes.Count(s, []byte{','}) + 1 }

// unescape appends quoted to dst with each backslash escape replaced by the
// byte it escapes.
func unescape(dst, quoted []byte) []byte {
	for i := 0; i < len(quoted); i++ {
		if quoted[i] == '\\' {
			i++ // the quoted scan guarantees a byte follows
		}
		dst = append(dst, quoted[i])
	}
	return dst
}

// isNull reports whether an unquoted element is NULL, in any case.
func isNull(el []byte) bool {
	return len(el) == 4 &&
		el[0]|0x20 == 'n' && el[1]|0x20 == 'u' && el[2]|0x20 == 'l' && el[3]|0x20 == 'l'
}

// elementError reports which element of an array failed to decode. Index
// is 1-based, as PostgreSQL subscripts are.
type elementError struct {
	index int
	err   error
}

func (e *elementError) Error() string {
	return "element " + strconv.Itoa(e.index) + ": " + e.err.Error()
}

func (e *elementError) Unwrap() error { return e.err }
