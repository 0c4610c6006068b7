package barereader

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// PostgreSQL type OIDs the reader decodes natively; every other type is
// kept as its text.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidTextArray   = 1009
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidJSONB       = 3802
)

// value is one decoded column. Only the field of its kind is set; a
// tagged struct rather than an interface so that decoding does not box.
type value struct {
	null bool
	i    int64   // bool (0/1), integers, numeric unscaled digits
	f    float64 // floats
	s    string  // text, json, anything undecoded
	t    time.Time
	arr  []string
	exp  int // numeric scale: value = i / 10^exp
}

// decode parses the text form of a column of type oid into v, the way a
// consumer that needs typed values would, with no more work than that.
func decode(oid uint32, b []byte, v *value) error {
	var err error
	switch oid {
	case oidBool:
		if len(b) != 1 || (b[0] != 't' && b[0] != 'f') {
			return fmt.Errorf("bool %q", b)
		}
		v.i = 0
		if b[0] == 't' {
			v.i = 1
		}
	case oidInt2, oidInt4, oidInt8:
		v.i, err = parseInt(b)
	case oidFloat4, oidFloat8:
		v.f, err = strconv.ParseFloat(string(b), 64)
	case oidNumeric:
		v.i, v.exp, err = parseNumeric(b)
		if err != nil {
			v.s = string(b) // beyond int64: keep the text, as a string column would
			err = nil
		}
	case oidTimestamptz:
		v.t, err = time.Parse("2006-01-02 15:04:05.999999999-07", string(b))
	case oidTimestamp:
		v.t, err = time.Parse("2006-01-02 15:04:05.999999999", string(b))
	case oidTextArray:
		v.arr, err = parseTextArray(b, v.arr[:0])
	default: // text, varchar, json, jsonb, …
		v.s = string(b)
	}
	return err
}

var errSyntax = errors.New("invalid syntax")

// parseInt parses a decimal integer without converting b to a string.
func parseInt(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, errSyntax
	}
	neg := b[0] == '-'
	if neg || b[0] == '+' {
		b = b[1:]
		if len(b) == 0 {
			return 0, errSyntax
		}
	}
	if len(b) > 18 {
		return strconv.ParseInt(string(b), 10, 64) // may overflow: let strconv say so
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errSyntax
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// parseNumeric parses a numeric's text ("-123.45") into its unscaled digits
// and scale. It fails for NaN, infinities and more than 18 digits.
func parseNumeric(b []byte) (int64, int, error) {
	var n int64
	scale, digits := 0, 0
	neg, dot := false, false
	for i, c := range b {
		switch {
		case c == '-' && i == 0:
			neg = true
		case c == '.' && !dot:
			dot = true
		case c >= '0' && c <= '9':
			digits++
			if digits > 18 {
				return 0, 0, errSyntax
			}
			n = n*10 + int64(c-'0')
			if dot {
				scale++
			}
		default:
			return 0, 0, errSyntax
		}
	}
	if digits == 0 {
		return 0, 0, errSyntax
	}
	if neg {
		n = -n
	}
	return n, scale, nil
}

// parseTextArray parses a one-dimensional text[] literal ({a,"b c",NULL})
// appending its elements to dst (NULL becomes "").
func parseTextArray(b []byte, dst []string) ([]string, error) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return dst, fmt.Errorf("array %q", b)
	}
	b = b[1 : len(b)-1]
	if len(b) == 0 {
		return dst, nil
	}
	var elem []byte
	for i := 0; i <= len(b); {
		if i < len(b) && b[i] == '"' {
			elem = elem[:0]
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' && i+1 < len(b) {
					i++
				}
				elem = append(elem, b[i])
				i++
			}
			if i >= len(b) {
				return dst, fmt.Errorf("array: unterminated quote")
			}
			dst = append(dst, string(elem))
			i++ // closing quote
		} else {
			j := i
			for j < len(b) && b[j] != ',' {
				j++
			}
			if s := b[i:j]; string(s) == "NULL" {
				dst = append(dst, "")
			} else {
				dst = append(dst, string(s))
			}
			i = j
		}
		if i < len(b) && b[i] != ',' {
			return dst, fmt.Errorf("array: want ',' at %d", i)
		}
		i++
	}
	return dst, nil
}
