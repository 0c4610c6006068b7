package relation

import (
	"encoding/hex"
	"errors"
	"strconv"
	"unicode/utf8"
)

// ErrInfinity is returned, wrapped, by [DecodeText] for a [Date], [Timestamp]
// or [TimestampTZ] value of 'infinity' or '-infinity' (also as an [Array]
// element): PostgreSQL accepts them but a time.Time cannot hold them. The
// sign is the first byte of the text ('-' for -infinity). A caller that wants
// to carry them, as a clamp to a far date say, branches on
// errors.Is(err, ErrInfinity); otherwise the row cannot be encoded.
var ErrInfinity = errors.New("infinite date or timestamp has no time.Time value")

// The reasons a text is rejected. Syntax and range problems are strconv's own
// sentinels so errors.Is(err, strconv.ErrSyntax) works as it does for strconv.
var (
	errSyntax       = strconv.ErrSyntax
	errRange        = strconv.ErrRange
	errFieldRange   = errors.New("date/time field value out of range")
	errByteaEscape  = errors.New("bytea escape format is not supported; set bytea_output to hex")
	errByteaOdd     = errors.New("odd number of hex digits")
	errByteaHex     = errors.New("invalid hex digit")
	errArrayBounds  = errors.New("arrays with explicit bounds are not supported")
	errArrayDims    = errors.New("multi-dimensional arrays are not supported")
	errArrayNoElem  = errors.New("array type has no element type")
	errArrayNested  = errors.New("array of arrays is not supported")
	errArrayEmpty   = errors.New("empty unquoted element")
	errArrayQuote   = errors.New("unterminated quoted element")
	errArrayUnquote = errors.New("unexpected character in unquoted element")
	errArrayDelim   = errors.New("expected ',' or '}' after element")
)

// DecodeText decodes src, a non-NULL column value in PostgreSQL's text output
// format (a pgoutput 't' tuple column, or a text-format result row), into the
// Go value documented on t.Kind. NULL never reaches it: the caller maps NULL
// to nil.
//
// The text is expected as printed by a session with DateStyle=ISO,
// TimeZone=UTC, extra_float_digits=3, bytea_output=hex and
// IntervalStyle=postgres; timestamptz offsets other than +00 are accepted
// too. The result never aliases src, so the caller may reuse src's buffer.
//
// A text that is not valid output for the kind yields an error of the form
// `parse int32 "abc": invalid syntax`, which wraps [strconv.ErrSyntax],
// [strconv.ErrRange], [ErrInfinity] or a more specific reason. A Kind with no
// text decoding ([Unsupported], or an unknown value) is an error too. The
// message repeats the text, cut to 64 bytes, so it may hold column data.
//
// DecodeText keeps no state and is safe for concurrent use.
func DecodeText(t *Type, src []byte) (any, error) {
	if t == nil {
		return nil, errors.New("decode text: nil type")
	}
	if t.Kind == Array {
		v, err := parseArray(t.Elem, src)
		if err != nil {
			return nil, newParseError(t.Kind, src, err)
		}
		return v, nil
	}
	if k := kindOf(t.Kind); k != nil && k.decode != nil {
		return k.decode(k, t, src)
	}
	return nil, &unsupportedError{kind: t.Kind, name: t.Name}
}

// parseInt parses a base-10 integer in [lo, hi]: an optional sign and at
// least one digit, nothing else (int2out/int4out/int8out print no '+' or
// spaces, but a '+' is harmless).
func parseInt(s []byte, lo, hi int64) (int64, error) {
	i := 0
	neg := false
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		i = 1
	}
	if i == len(s) {
		return 0, errSyntax
	}
	limit := uint64(hi)
	if neg {
		limit = uint64(-(lo + 1)) + 1 // |lo| without overflowing
	}
	var u uint64
	for ; i < len(s); i++ {
		d := s[i] - '0'
		if d > 9 {
			return 0, errSyntax
		}
		if u > (limit-uint64(d))/10 {
			// Junk after too many digits is a syntax error, not a range error.
			for _, c := range s[i:] {
				if c-'0' > 9 {
					return 0, errSyntax
				}
			}
			return 0, errRange
		}
		u = u*10 + uint64(d)
	}
	if neg {
		return -int64(u-1) - 1, nil // -u without overflowing at -1<<63
	}
	return int64(u), nil
}

// parseFloat parses float4out/float8out text: a decimal number, possibly
// with an exponent, or exactly NaN, Infinity or -Infinity. strconv's other
// spellings (inf, hex floats, underscores) are rejected.
func parseFloat(s []byte, bits int) (float64, error) {
	if len(s) == 0 {
		return 0, errSyntax
	}
	if !floatChars(s) {
		switch string(s) {
		case "NaN", "Infinity", "-Infinity":
		default:
			return 0, errSyntax
		}
	}
	v, err := strconv.ParseFloat(string(s), bits)
	if ne, ok := err.(*strconv.NumError); ok {
		return 0, ne.Err
	}
	return v, err
}

// floatChars reports whether s holds only the bytes of a decimal float.
func floatChars(s []byte) bool {
	for _, c := range s {
		if !isDigit(c) && c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E' {
			return false
		}
	}
	return true
}

// validNumeric reports whether s is numeric_out text: -?[0-9]+(\.[0-9]+)?,
// NaN, Infinity or -Infinity. numeric_out never prints an exponent.
func validNumeric(s []byte) bool {
	i := 0
	if len(s) > 0 && s[0] == '-' {
		i = 1
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i == start {
		switch string(s) {
		case "NaN", "Infinity", "-Infinity":
			return true
		}
		return false
	}
	if i == len(s) {
		return true
	}
	if s[i] != '.' {
		return false
	}
	i++
	start = i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i > start && i == len(s)
}

// parseBytea decodes byteaout's hex format, \x followed by two hex digits a
// byte. The escape format is rejected rather than guessed at: its text is
// ambiguous with hex only for values nobody would store, but decoding it as
// anything else would silently corrupt data.
func parseBytea(s []byte) ([]byte, error) {
	if len(s) < 2 || s[0] != '\\' || s[1] != 'x' {
		return nil, errByteaEscape
	}
	s = s[2:]
	if len(s)%2 != 0 {
		return nil, errByteaOdd
	}
	out := make([]byte, len(s)/2)
	if _, err := hex.Decode(out, s); err != nil {
		return nil, errByteaHex
	}
	return out, nil
}

// parseUUID validates the 8-4-4-4-12 hex form uuid_out prints and returns it
// in lower case.
func parseUUID(s []byte) ([36]byte, error) {
	var buf [36]byte
	if len(s) != 36 {
		return buf, errSyntax
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return buf, errSyntax
			}
		default:
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			case c >= 'A' && c <= 'F':
				c += 'a' - 'A'
			default:
				return buf, errSyntax
			}
		}
		buf[i] = c
	}
	return buf, nil
}

func isDigit(c byte) bool { return c-'0' <= 9 }

// maxQuoted is how many bytes of a rejected text an error message repeats.
const maxQuoted = 64

// parseError reports a text that is not valid output for its kind.
type parseError struct {
	kind Kind
	text string // the rejected text, cut to maxQuoted bytes
	cut  bool   // text was cut
	err  error
}

func newParseError(k Kind, src []byte, err error) error {
	e := &parseError{kind: k, err: err}
	if len(src) > maxQuoted {
		n := maxQuoted
		for n > maxQuoted-utf8.UTFMax && !utf8.RuneStart(src[n]) {
			n--
		}
		src, e.cut = src[:n], true
	}
	e.text = string(src)
	return e
}

func (e *parseError) Error() string {
	q := strconv.Quote(e.text)
	if e.cut {
		q += "..."
	}
	return "parse " + e.kind.String() + " " + q + ": " + e.err.Error()
}

func (e *parseError) Unwrap() error { return e.err }

// unsupportedError reports a Kind that has no text decoding.
type unsupportedError struct {
	kind    Kind
	name    string
	decoder string // the unboxed decoder called, if not DecodeText
}

func (e *unsupportedError) Error() string {
	msg := "decode text: kind " + e.kind.String() + " is not supported"
	if e.decoder != "" {
		msg = e.decoder + ": kind " + e.kind.String() + " is not supported"
	}
	if e.name != "" {
		msg += " (type " + strconv.Quote(e.name) + ")"
	}
	return msg
}
