package sink

import (
	"bytes"
	"encoding/hex"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/hamba/avro/v2"
)

// The COPY line: a PostgreSQL read model of one source writes each
// owner record as a line of COPY text, and the usual way to that line is
// three steps, each with its allocations: the Avro bytes decoded into Go
// values (a string, a *big.Rat, a time.Time, a []any per array, each
// boxed), the values converted to driver values (typedArray, decimal
// text), and those encoded as COPY text. Together they were more than
// half of a rebuild's CPU, which on two cores is CPU the server's COPY
// does not get (bench/analysis.md, "rebuild-pg: the COPY line").
//
// A lineEncoder writes the line straight from the record's Avro bytes,
// for a writer schema read directly (fieldOp: the reader's types
// exactly) whose needed fields are all of the kinds it knows, into the
// column types the table had when the batch was decoded. It must write
// byte for byte what the three steps write (TestCopyLineMatchesValues);
// anything else (a kind it does not know, a decimal wider than 64 bits,
// a year COPY's text cannot take, bytes it cannot read) leaves the record
// to the three steps.

// lineEncoder writes an owner record's row as one COPY text line.
type lineEncoder struct {
	types []string  // the column types the text is for
	ops   []lineOp  // one per writer field, in the writer's order
	cols  []lineCol // one per column, in the columns' order
	// inOrder: the value's fields come in the columns' order, one column
	// each, after every other column, so their text is written straight
	// into the line; otherwise through seg, then in the columns' order.
	inOrder    bool
	firstValue int // the first column taken from the value
	seg        bytes.Buffer
	pos        [][2]int // each value column's text in seg
	tmp        rawBuf   // a string's bytes, read before they are escaped
}

// lineOp reads one writer field: skipped (cols nil), or its text written
// once for each column that takes it.
type lineOp struct {
	writer avro.Schema
	text   textOp
	cols   []int
}

// lineCol is where a column's text comes from: the row key's converted
// cell (key, the first columns), a field of the topic key (src's field
// fromKey, through the values' way: the key is decoded anyway), or the
// value's bytes (seg).
type lineCol struct {
	key     bool
	fromKey int // index into the source's fields, or -1
}

// textOp writes the COPY text of one Avro value read from r into b; false
// when it has no text here (the record then takes the values' way). tmp is
// scratch for a string's bytes.
type textOp func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool

// rawBuf holds a string's or bytes' content while it is escaped; max is
// the most a length prefix may claim: the record's bytes.
type rawBuf struct {
	b   []byte
	max int
}

// newLineEncoder plans the lines of src's records written with the writer
// fields ops (a direct reading, fastdecode.go) into columns of types, or
// returns nil when a needed field has a kind the lines do not know.
func newLineEncoder(p *plan, src int, ops []fieldOp, types []string) *lineEncoder {
	if ops == nil || len(types) != len(p.columns) {
		return nil
	}
	sp := &p.sources[src]
	le := &lineEncoder{types: slices.Clone(types), cols: make([]lineCol, len(p.columns)), pos: make([][2]int, len(p.columns))}
	for j := range le.cols {
		le.cols[j] = lineCol{key: j < p.keyCount(), fromKey: -1}
	}
	bySlot := map[int][]int{} // a value field's slot → the columns it fills
	for i, ci := range sp.cols {
		if sp.fields[i].fromKey {
			le.cols[ci].fromKey = i
			continue
		}
		bySlot[sp.fields[i].slot] = append(bySlot[sp.fields[i].slot], ci)
	}
	filled := 0
	for _, op := range ops {
		lo := lineOp{writer: op.writer}
		if op.slot >= 0 {
			for _, ci := range bySlot[op.slot] {
				c := p.columns[ci]
				text := textReading(op.writer, c.typ, c.override, types[ci])
				if text == nil {
					return nil
				}
				lo.text = text // the same for each column (checked below)
				lo.cols = append(lo.cols, ci)
				filled++
			}
		}
		le.ops = append(le.ops, lo)
	}
	want := 0
	for _, c := range le.cols {
		if !c.key && c.fromKey < 0 {
			want++
		}
	}
	if filled != want {
		return nil // a column whose field the writer lacks: resolution's
	}
	// One field's text serves all its columns: the same whatever the
	// column's type but for a time's (a timestamp into a timestamptz and
	// a date column), which the values' way writes.
	for _, op := range le.ops {
		for _, ci := range op.cols[min(1, len(op.cols)):] {
			k := p.columns[ci].typ.kind
			if types[ci] != types[op.cols[0]] && (k == kindDate || k == kindTimestamp) {
				return nil
			}
		}
	}
	le.inOrder = true
	next := 0 // the first value column
	for next < len(le.cols) && (le.cols[next].key || le.cols[next].fromKey >= 0) {
		next++
	}
	le.firstValue = next
	for _, op := range le.ops {
		switch {
		case op.cols == nil:
		case len(op.cols) == 1 && op.cols[0] == next:
			next++
		default:
			le.inOrder = false
		}
	}
	le.inOrder = le.inOrder && next == len(le.cols)
	return le
}

// encode appends the line of a record: payload its value's Avro bytes,
// key its decoded topic key, keyCells the row key's driver values. False
// (out as it was) when the record must take the values' way.
func (le *lineEncoder) encode(a *applier, src int, r *avro.Reader, payload []byte, key fields, keyCells []any, out *bytes.Buffer) bool {
	r.Reset(payload)
	r.Error = nil
	le.tmp.max = len(payload)
	if le.inOrder {
		return le.encodeInOrder(a, src, r, key, keyCells, out)
	}
	if le.seg.Cap() > 1<<20 { // kept for the next record only when small
		le.seg = bytes.Buffer{}
	}
	le.seg.Reset()
	for i := range le.ops {
		op := &le.ops[i]
		if op.cols == nil {
			skipValue(r, op.writer)
		} else {
			start := le.seg.Len()
			if !op.text(r, &le.seg, &le.tmp) {
				return false
			}
			for _, ci := range op.cols {
				le.pos[ci] = [2]int{start, le.seg.Len()}
			}
		}
		if r.Error != nil {
			return false
		}
	}
	mark := out.Len()
	seg := le.seg.Bytes()
	for j, c := range le.cols {
		if j > 0 {
			out.WriteByte('\t')
		}
		if !c.key && c.fromKey < 0 {
			out.Write(seg[le.pos[j][0]:le.pos[j][1]])
		} else if !le.keyText(a, src, j, key, keyCells, out) {
			out.Truncate(mark)
			return false
		}
	}
	out.WriteByte('\n')
	return true
}

// keyText writes the text of column j, the row key's or a topic key
// field's, as the values' way writes it.
func (le *lineEncoder) keyText(a *applier, src, j int, key fields, keyCells []any, out *bytes.Buffer) bool {
	cell := keyCells[j]
	if c := le.cols[j]; !c.key {
		v, err := a.sourceValue(src, c.fromKey, key, fields{})
		if err != nil {
			return false
		}
		cell = v
	}
	return appendCopyText(out, cell, le.types[j])
}

// encodeInOrder is encode of a writer whose fields come in the columns'
// order: the columns before the first value column (the row key's, a
// topic key field's), then each field's text as it is read.
func (le *lineEncoder) encodeInOrder(a *applier, src int, r *avro.Reader, key fields, keyCells []any, out *bytes.Buffer) bool {
	mark := out.Len()
	for i := range le.firstValue {
		if i > 0 {
			out.WriteByte('\t')
		}
		if !le.keyText(a, src, i, key, keyCells, out) {
			out.Truncate(mark)
			return false
		}
	}
	j := le.firstValue
	for i := range le.ops {
		op := &le.ops[i]
		if op.cols == nil {
			skipValue(r, op.writer)
		} else {
			if j > 0 {
				out.WriteByte('\t')
			}
			j++
			if !op.text(r, out, &le.tmp) {
				out.Truncate(mark)
				return false
			}
		}
		if r.Error != nil {
			out.Truncate(mark)
			return false
		}
	}
	out.WriteByte('\n')
	return true
}

// textReading returns the COPY text op of a value of Avro schema s into a
// column of type t (override the config's SQL type, colType the table's
// type as format_type names it), writing what the values' way writes
// (dialect value, then appendCopyText); nil for what it leaves to them.
func textReading(s avro.Schema, t fieldType, override, colType string) textOp {
	if u, ok := s.(*avro.UnionSchema); ok {
		branch, null, ok := nullable(u)
		if !ok {
			return nil
		}
		inner := textReading(branch, t, override, colType)
		if inner == nil {
			return nil
		}
		return func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
			switch r.ReadLong() {
			case null:
				b.WriteString(`\N`)
				return true
			case 1 - null:
				return inner(r, b, tmp)
			}
			return false
		}
	}
	var logical avro.LogicalType
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		logical = ls.Logical().Type()
	}
	switch s.Type() {
	case avro.Array:
		// A PostgreSQL array of plain elements (postgresDialect.value's
		// typedArray), every element quoted, a null one NULL.
		if !t.array || (override != "" && !isArrayType(override)) {
			return nil
		}
		elem := elementText(s.(*avro.ArraySchema).Items())
		if elem == nil {
			return nil
		}
		return func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
			b.WriteByte('{')
			first := true
			for r.Error == nil {
				n, _ := r.ReadBlockHeader()
				if n == 0 {
					break
				}
				for ; n > 0 && r.Error == nil; n-- {
					if !first {
						b.WriteByte(',')
					}
					first = false
					if !elem(r, b, tmp) {
						return false
					}
				}
			}
			b.WriteByte('}')
			return r.Error == nil
		}
	case avro.Boolean:
		return func(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
			if r.ReadBool() {
				b.WriteByte('t')
			} else {
				b.WriteByte('f')
			}
			return true
		}
	case avro.Int:
		switch logical {
		case "":
			return func(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
				b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.ReadInt()), 10))
				return true
			}
		case avro.Date:
			return timeReading(colType, func(r *avro.Reader) time.Time { return dateOf(r.ReadInt()) })
		}
	case avro.Long:
		switch logical {
		case "":
			return func(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
				b.Write(strconv.AppendInt(b.AvailableBuffer(), r.ReadLong(), 10))
				return true
			}
		case avro.TimestampMicros:
			return timeReading(colType, func(r *avro.Reader) time.Time { return instantOfMicros(r.ReadLong()) })
		case avro.TimestampMillis:
			return timeReading(colType, func(r *avro.Reader) time.Time { return instantOfMillis(r.ReadLong()) })
		}
	case avro.Float:
		if logical == "" {
			return func(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
				b.WriteString(floatText(float64(r.ReadFloat()), 64))
				return true
			}
		}
	case avro.Double:
		if logical == "" {
			return func(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
				b.WriteString(floatText(r.ReadDouble(), 64))
				return true
			}
		}
	case avro.String:
		if logical == "" || logical == avro.UUID {
			return func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
				s, ok := readRaw(r, tmp)
				if ok {
					appendCopyEscapedBytes(b, s)
				}
				return ok
			}
		}
	case avro.Bytes:
		switch logical {
		case "":
			return func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
				s, ok := readRaw(r, tmp)
				if ok {
					b.WriteString(`\\x`)
					b.Write(hex.AppendEncode(b.AvailableBuffer(), s))
				}
				return ok
			}
		case avro.Decimal:
			scale := s.(avro.LogicalTypeSchema).Logical().(*avro.DecimalLogicalSchema).Scale()
			if scale != t.scale {
				return nil
			}
			return func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
				s, ok := readRaw(r, tmp)
				return ok && appendDecimal64(b, s, scale)
			}
		}
	}
	return nil
}

// timeReading is the text of an instant read by read into a column of
// type colType, as appendCopyText writes a time.Time.
func timeReading(colType string, read func(*avro.Reader) time.Time) textOp {
	switch colType {
	case "timestamp with time zone", "timestamp without time zone", "date":
	default:
		return nil
	}
	return func(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
		return appendTimeCopyText(b, read(r), colType)
	}
}

// elementText reads an array's element of schema s (a union with null or
// not): a plain string, int or long (what typedArray makes a PostgreSQL
// array of), or NULL; nil for any other element (an enum, whose kind is a
// string's too, a logical type).
func elementText(s avro.Schema) textOp {
	if u, ok := s.(*avro.UnionSchema); ok {
		branch, null, ok := nullable(u)
		if !ok {
			return nil
		}
		text := elementText(branch)
		if text == nil {
			return nil
		}
		return func(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
			switch r.ReadLong() {
			case null:
				b.WriteString("NULL")
				return true
			case 1 - null:
				return text(r, b, tmp)
			}
			return false
		}
	}
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		return nil
	}
	switch s.Type() {
	case avro.String:
		return stringElemText
	case avro.Int:
		return intElemText
	case avro.Long:
		return longElemText
	}
	return nil
}

// stringElemText and intElemText write a quoted element of an array
// literal in COPY text, as appendArray does for typedArray's elements.
func stringElemText(r *avro.Reader, b *bytes.Buffer, tmp *rawBuf) bool {
	s, ok := readRaw(r, tmp)
	if !ok {
		return false
	}
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '\\': // escaped in the literal, then for COPY
			b.WriteString(`\\\\`)
		case c == '"':
			b.WriteString(`\\"`)
		case copySpecial[c]:
			b.WriteString(copyEscapes[c])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return true
}

func intElemText(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
	b.WriteByte('"')
	b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.ReadInt()), 10))
	b.WriteByte('"')
	return true
}

func longElemText(r *avro.Reader, b *bytes.Buffer, _ *rawBuf) bool {
	b.WriteByte('"')
	b.Write(strconv.AppendInt(b.AvailableBuffer(), r.ReadLong(), 10))
	b.WriteByte('"')
	return true
}

// readRaw reads an Avro string's or bytes' content into tmp (reused:
// valid until the next read), without an allocation per value. A length
// beyond the record's bytes or maxValueBytes (which hamba/avro refuses
// too) is false: the values' way then says what is wrong. A value over
// 1 MiB is read into a buffer of its own, so that no such buffer is kept.
func readRaw(r *avro.Reader, tmp *rawBuf) ([]byte, bool) {
	n := r.ReadLong()
	if r.Error != nil || n < 0 || n > int64(tmp.max) || n > maxValueBytes {
		return nil, false
	}
	var s []byte
	switch {
	case n > 1<<20:
		s = make([]byte, n)
	case cap(tmp.b) < int(n):
		tmp.b = make([]byte, n, max(n, 64))
		s = tmp.b
	default:
		s = tmp.b[:n]
	}
	r.Read(s) // short bytes set r.Error
	return s, r.Error == nil
}

// appendCopyEscapedBytes is appendCopyEscaped of s's bytes.
func appendCopyEscapedBytes(b *bytes.Buffer, s []byte) {
	start := 0
	for i, c := range s {
		if !copySpecial[c] {
			continue
		}
		b.Write(s[start:i])
		b.WriteString(copyEscapes[c])
		start = i + 1
	}
	b.Write(s[start:])
}

// appendDecimal64 writes an Avro decimal of scale (its bytes the
// big-endian two's-complement unscaled integer) as decimalText writes it,
// when the integer fits in an int64 (not its minimum) and the scale in
// its digits; false otherwise.
func appendDecimal64(b *bytes.Buffer, s []byte, scale int) bool {
	if len(s) > 8 || scale >= len(pow10) {
		return false
	}
	var n int64
	for _, c := range s {
		n = n<<8 | int64(c)
	}
	if len(s) > 0 && len(s) < 8 && s[0]&0x80 != 0 {
		n -= 1 << (8 * len(s)) // sign-extend
	}
	if n == math.MinInt64 {
		return false
	}
	if n < 0 {
		b.WriteByte('-')
		n = -n
	}
	p := pow10[scale]
	b.Write(strconv.AppendInt(b.AvailableBuffer(), n/p, 10))
	if scale > 0 {
		var frac [20]byte
		putDigits(frac[:scale], int(n%p))
		b.WriteByte('.')
		b.Write(frac[:scale])
	}
	return true
}
