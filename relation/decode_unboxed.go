package relation

import "time"

// The decoders below are DecodeText for one family of kinds, returning the
// value unboxed. An encoder that writes each value as soon as it is decoded
// (mapping's text path) then allocates nothing per value: boxing an int64,
// a time.Time or an array element into an interface costs an allocation
// each, which was most of the snapshot's garbage (docs/BENCHMARKS.md). They
// accept and reject exactly what DecodeText does, with the same errors, and
// DecodeText is built on them.

// DecodeInt decodes an Int16, Int32 or Int64 value.
func DecodeInt(t *Type, src []byte) (int64, error) {
	k := kindOf(t.Kind)
	if k == nil || k.hi == 0 {
		return 0, wrongKind(t, "DecodeInt")
	}
	v, err := parseInt(src, k.lo, k.hi)
	if err != nil {
		return 0, newParseError(t.Kind, src, err)
	}
	return v, nil
}

// DecodeFloat decodes a Float32 or Float64 value; a Float32 is rounded to
// float32 precision (converting the result to float32 is exact).
func DecodeFloat(t *Type, src []byte) (float64, error) {
	k := kindOf(t.Kind)
	if k == nil || k.floatBits == 0 {
		return 0, wrongKind(t, "DecodeFloat")
	}
	v, err := parseFloat(src, k.floatBits)
	if err != nil {
		return 0, newParseError(t.Kind, src, err)
	}
	return v, nil
}

// CheckNumeric reports whether src is numeric_out text; the value of a
// Numeric is its text.
func CheckNumeric(t *Type, src []byte) error {
	if t.Kind != Numeric {
		return wrongKind(t, "CheckNumeric")
	}
	if !validNumeric(src) {
		return newParseError(t.Kind, src, errSyntax)
	}
	return nil
}

// DecodeBool decodes a Bool value.
func DecodeBool(t *Type, src []byte) (bool, error) {
	if t.Kind != Bool {
		return false, wrongKind(t, "DecodeBool")
	}
	v, err := parseBool(src)
	if err != nil {
		return false, newParseError(t.Kind, src, err)
	}
	return v, nil
}

// parseBool parses boolout's t and f, and the true and false of a bool
// cast to text.
func parseBool(src []byte) (bool, error) {
	switch string(src) {
	case "t", "true":
		return true, nil
	case "f", "false":
		return false, nil
	}
	return false, errSyntax
}

// DecodeUUID decodes a UUID value into its canonical text, in lower case.
func DecodeUUID(t *Type, src []byte) ([36]byte, error) {
	if t.Kind != UUID {
		return [36]byte{}, wrongKind(t, "DecodeUUID")
	}
	v, err := parseUUID(src)
	if err != nil {
		return v, newParseError(t.Kind, src, err)
	}
	return v, nil
}

// DecodeDateTime decodes a Date, Timestamp or TimestampTZ value, in UTC as
// documented on the kinds; 'infinity' is an error wrapping [ErrInfinity].
func DecodeDateTime(t *Type, src []byte) (time.Time, error) {
	if k := kindOf(t.Kind); k == nil || !k.dateTime {
		return time.Time{}, wrongKind(t, "DecodeDateTime")
	}
	v, err := parseDateTime(t.Kind, src)
	if err != nil {
		return time.Time{}, newParseError(t.Kind, src, err)
	}
	return v, nil
}

// ScanArray walks the elements of src, the text of an Array value, in
// order: each gets an element's text (backslash escapes removed, valid
// only during the call) or null set for a NULL element, and decodes it with
// the Decode function of t.Elem's kind. The array's syntax is checked as
// DecodeText checks it, and a syntax error is returned as DecodeText
// returns it; an error from each is returned as it is, after the elements
// before it were seen. ScanArray returns the number of elements.
func ScanArray(t *Type, src []byte, each func(el []byte, null bool) error) (int, error) {
	if t.Kind != Array {
		return 0, wrongKind(t, "ScanArray")
	}
	n, err := scanArray(t.Elem, src, each)
	if cb, ok := err.(*callbackError); ok {
		return n, cb.err
	}
	if err != nil {
		return n, newParseError(t.Kind, src, err)
	}
	return n, nil
}

// callbackError marks an error of scanArray's callback, so that ScanArray
// tells it apart from the syntax errors it wraps.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// scanArray parses array_out text of one dimension, {e1,e2,...}, calling
// each for every element. An unquoted NULL (any case) is a NULL element;
// "NULL" in quotes is the string.
//
// array_out quotes an element that is empty, is NULL in any case, or holds
// one of {}",\ or white space, and escapes " and \ inside quotes with a
// backslash. The delimiter is ',' for every kind replicator supports (only
// box uses ';'). An array whose lower bound is not 1 prints as
// [lo:hi]={...}, and a multi-dimensional one as {{...},...}; both are
// rejected, as neither fits a flat list. An error of each is returned
// wrapped in a *callbackError.
func scanArray(elem *Type, s []byte, each func(el []byte, null bool) error) (int, error) {
	if elem == nil {
		return 0, errArrayNoElem
	}
	if elem.Kind == Array {
		return 0, errArrayNested
	}
	if len(s) > 0 && s[0] == '[' {
		return 0, errArrayBounds
	}
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return 0, errSyntax
	}
	body := s[1 : len(s)-1]
	if len(body) == 0 {
		return 0, nil
	}
	if body[0] == '{' {
		return 0, errArrayDims
	}
	// unescaped holds a quoted element with its backslashes removed, reused
	// for every element (each may not keep one). It is allocated only when
	// an element has escapes: a buffer on the stack would escape to the
	// heap anyway, being passed to each.
	var unescaped []byte
	n := 0
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
				return n, errArrayQuote
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
					return n, errArrayUnquote
				}
			}
			el = body[start:i]
			if len(el) == 0 {
				return n, errArrayEmpty
			}
			null = isNull(el)
		}
		if null {
			el = nil
		}
		if err := each(el, null); err != nil {
			return n, &callbackError{err}
		}
		n++
		if i == len(body) {
			return n, nil
		}
		if body[i] != ',' {
			return n, errArrayDelim
		}
		i++
	}
}

// wrongKind reports a decoder called for a kind it does not decode: a
// programming error, not bad data.
func wrongKind(t *Type, decoder string) error {
	return &unsupportedError{kind: t.Kind, name: t.Name, decoder: decoder}
}
