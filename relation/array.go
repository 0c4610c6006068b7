package relation

import (
	"bytes"
	"strconv"
)

// parseArray parses array_out text of one dimension, {e1,e2,...}, and decodes
// every element as elem with [DecodeText]. An unquoted NULL (any case) is a
// NULL element and becomes nil; "NULL" in quotes is the string.
//
// array_out quotes an element that is empty, is NULL in any case, or holds
// one of {}",\ or white space, and escapes " and \ inside quotes with a
// backslash. The delimiter is ',' for every kind replicator supports (only
// box uses ';'). An array whose lower bound is not 1 prints as
// [lo:hi]={...}, and a multi-dimensional one as {{...},...}; both are
// rejected, as neither fits the []any contract.
func parseArray(elem *Type, s []byte) ([]any, error) {
	if elem == nil {
		return nil, errArrayNoElem
	}
	if elem.Kind == Array {
		return nil, errArrayNested
	}
	if len(s) > 0 && s[0] == '[' {
		return nil, errArrayBounds
	}
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, errSyntax
	}
	body := s[1 : len(s)-1]
	if len(body) == 0 {
		return []any{}, nil
	}
	if body[0] == '{' {
		return nil, errArrayDims
	}

	// Commas bound the element count from above (quoted elements may hold
	// more), and counting them is cheaper than growing the slice.
	out := make([]any, 0, bytes.Count(body, []byte{','})+1)
	// unescaped holds a quoted element with its backslashes removed. It is
	// reused for every element, and starts on the stack: DecodeText never
	// returns a value that aliases its input, nor keeps it.
	var stack [128]byte
	unescaped := stack[:0]
	for i := 0; ; {
		var el []byte
		null := false
		if i < len(body) && body[i] == '"' {
			i++
			start, escapes := i, false
			for ; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' {
					escapes = true
					i++
				}
			}
			if i >= len(body) {
				return nil, errArrayQuote
			}
			el = body[start:i]
			i++ // closing quote
			if escapes {
				unescaped = unescape(unescaped[:0], el)
				el = unescaped
			}
		} else {
			start := i
			for ; i < len(body) && body[i] != ','; i++ {
				switch body[i] {
				case '"', '\\', '{', '}', ' ', '\t', '\n', '\v', '\f', '\r':
					return nil, errArrayUnquote
				}
			}
			el = body[start:i]
			if len(el) == 0 {
				return nil, errArrayEmpty
			}
			null = isNull(el)
		}

		if null {
			out = append(out, nil)
		} else {
			v, err := DecodeText(elem, el)
			if err != nil {
				return nil, &elementError{index: len(out) + 1, err: err}
			}
			out = append(out, v)
		}

		if i == len(body) {
			return out, nil
		}
		if body[i] != ',' {
			return nil, errArrayDelim
		}
		i++
	}
}

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
