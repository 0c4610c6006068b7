package relation

import "math"

// kind is everything relation knows about one [Kind]: its name, how its
// text decodes into the Go value the Kind documents, and the parameters
// its family's unboxed decoder needs. kinds holds one per Kind, in the
// order of the constants, so a new kind is one entry here (and one case in
// mapping's columnCodec); TestEveryKindIsDescribed fails until it has one.
type kind struct {
	name string
	// decode is DecodeText for the kind; nil for Unsupported, and for
	// Array, which DecodeText handles itself because its elements decode
	// through DecodeText again (a table entry naming it would be an
	// initialization cycle).
	decode func(k *kind, t *Type, src []byte) (any, error)
	// lo and hi bound an integer kind's values (DecodeInt); hi is zero
	// for every other kind.
	lo, hi int64
	// floatBits is a float kind's precision (DecodeFloat).
	floatBits int
	// dateTime marks the kinds DecodeDateTime decodes.
	dateTime bool
}

var kinds = [kindEnd]kind{
	Unsupported: {name: "unsupported"},
	Int16:       {name: "int16", decode: decodeInt32, lo: math.MinInt16, hi: math.MaxInt16},
	Int32:       {name: "int32", decode: decodeInt32, lo: math.MinInt32, hi: math.MaxInt32},
	Int64:       {name: "int64", decode: decodeInt64, lo: math.MinInt64, hi: math.MaxInt64},
	Float32:     {name: "float32", decode: decodeFloat32, floatBits: 32},
	Float64:     {name: "float64", decode: decodeFloat64, floatBits: 64},
	Numeric:     {name: "numeric", decode: decodeNumeric},
	Text:        {name: "text", decode: decodeString},
	Bool:        {name: "bool", decode: decodeBool},
	Bytes:       {name: "bytes", decode: decodeBytes},
	UUID:        {name: "uuid", decode: decodeUUID},
	Date:        {name: "date", decode: decodeDateTime, dateTime: true},
	Time:        {name: "time", decode: decodeTime},
	Timestamp:   {name: "timestamp", decode: decodeDateTime, dateTime: true},
	TimestampTZ: {name: "timestamptz", decode: decodeDateTime, dateTime: true},
	JSON:        {name: "json", decode: decodeString},
	Enum:        {name: "enum", decode: decodeString},
	Array:       {name: "array"},
}

// kindOf returns k's entry, or nil for a value that is not a Kind.
func kindOf(k Kind) *kind {
	if int(k) < len(kinds) {
		return &kinds[k]
	}
	return nil
}

// The decode functions of kinds. They may not call DecodeText or the
// exported unboxed decoders, which read kinds (an initialization cycle):
// they call the parsers those are built on.

func decodeInt32(k *kind, t *Type, src []byte) (any, error) {
	v, err := parseInt(src, k.lo, k.hi)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return int32(v), nil
}

func decodeInt64(k *kind, t *Type, src []byte) (any, error) {
	v, err := parseInt(src, k.lo, k.hi)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return v, nil
}

func decodeFloat32(k *kind, t *Type, src []byte) (any, error) {
	v, err := parseFloat(src, k.floatBits)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return float32(v), nil
}

func decodeFloat64(k *kind, t *Type, src []byte) (any, error) {
	v, err := parseFloat(src, k.floatBits)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return v, nil
}

func decodeNumeric(_ *kind, t *Type, src []byte) (any, error) {
	if !validNumeric(src) {
		return nil, newParseError(t.Kind, src, errSyntax)
	}
	return string(src), nil
}

func decodeString(_ *kind, _ *Type, src []byte) (any, error) { return string(src), nil }

func decodeBool(_ *kind, t *Type, src []byte) (any, error) {
	v, err := parseBool(src)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return v, nil
}

func decodeBytes(_ *kind, t *Type, src []byte) (any, error) {
	v, err := parseBytea(src)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return v, nil
}

func decodeUUID(_ *kind, t *Type, src []byte) (any, error) {
	v, err := parseUUID(src)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return string(v[:]), nil
}

func decodeDateTime(_ *kind, t *Type, src []byte) (any, error) {
	v, err := parseDateTime(t.Kind, src)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return v, nil
}

func decodeTime(_ *kind, t *Type, src []byte) (any, error) {
	v, err := parseTimeOfDay(src)
	if err != nil {
		return nil, newParseError(t.Kind, src, err)
	}
	return v, nil
}
