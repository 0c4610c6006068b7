package sink

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"time"

	"github.com/hamba/avro/v2"
)

// The direct reading: decoding each record into a map with hamba/avro and
// then picking fields was most of a rebuild's CPU (a map, an interface per
// field, skipped fields decoded all the same). For a writer schema whose
// needed fields have exactly the reader's types (the usual case: the
// reader is the latest schema), the record is read field by field with
// hamba/avro's Reader: fields the read model does not need are skipped
// without being built, needed fields of the common kinds are read with
// the Reader's primitives into the values the map decoding yields, and
// the others (arrays, maps, records, enums, fixed, local timestamps, wider
// unions) through hamba/avro's own decoder of that field's type. A writer
// schema that needs resolution (a type promoted, a reader field missing and
// defaulted) is read the map way, as is any record whose bytes the direct
// reading cannot read (hamba/avro then decides what they yield).

// fields is a decoded key or value: the reader's fields, in the reader's
// order.
type fields struct {
	h    *half // nil: no record (a tombstone's value)
	vals []any
}

// none reports whether there is no record (a tombstone's value).
func (f fields) none() bool { return f.h == nil }

// get returns the decoded value of a reader field.
func (f fields) get(name string) (any, bool) {
	if f.h == nil {
		return nil, false
	}
	i, ok := f.h.index[name]
	if !ok {
		return nil, false
	}
	return f.vals[i], true
}

// at returns the decoded value in a reader field's slot (a fieldRef's,
// resolved once instead of looking its name up per record).
func (f fields) at(slot int) (any, bool) {
	if f.h == nil {
		return nil, false
	}
	return f.vals[slot], true
}

// fieldOp reads one field of the writer's record.
type fieldOp struct {
	writer avro.Schema            // the field's writer type
	slot   int                    // the reader's slot, or -1: skip the field
	read   func(*avro.Reader) any // a primitive reading, or nil: hamba/avro's decoder of writer
	reader avro.Schema            // the reader's type, whose unions are unwrapped
}

// directOps plans the direct reading of writer's records into reader's
// slots, or returns nil when a reader field needs schema resolution.
func directOps(reader, writer *avro.RecordSchema) []fieldOp {
	slot := map[string]int{}
	for i, f := range reader.Fields() {
		slot[f.Name()] = i
	}
	ops := make([]fieldOp, 0, len(writer.Fields()))
	found := 0
	for _, wf := range writer.Fields() {
		i, need := slot[wf.Name()]
		if !need {
			ops = append(ops, fieldOp{writer: wf.Type(), slot: -1})
			continue
		}
		rt := reader.Fields()[i].Type()
		if !sameSchema(rt, wf.Type()) {
			return nil
		}
		found++
		ops = append(ops, fieldOp{writer: wf.Type(), slot: i, read: primitiveReading(wf.Type()), reader: rt})
	}
	if found != len(reader.Fields()) {
		return nil // a reader field the writer lacks: its default, by resolution
	}
	return ops
}

// sameSchema reports whether two schemas are the same, logical types,
// names and defaults included (the parsing canonical form drops logical
// types).
func sameSchema(a, b avro.Schema) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// primitiveReading returns a reading of s with the Reader's primitives
// that yields what hamba/avro's generic decoding does (after unions are
// unwrapped), or nil for the types it leaves to hamba/avro.
func primitiveReading(s avro.Schema) func(*avro.Reader) any {
	if u, ok := s.(*avro.UnionSchema); ok {
		branch, null, ok := nullable(u)
		if !ok {
			return nil
		}
		inner := primitiveReading(branch)
		if inner == nil {
			return nil
		}
		return func(r *avro.Reader) any {
			switch r.ReadLong() {
			case null:
				return nil
			case 1 - null:
				return inner(r)
			}
			r.ReportError("read union", "unknown union branch")
			return nil
		}
	}
	var logical avro.LogicalType
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		logical = ls.Logical().Type()
	}
	switch s.Type() {
	case avro.Array:
		item := primitiveReading(s.(*avro.ArraySchema).Items())
		if item == nil {
			return nil
		}
		// Items are appended as read, never allocated from a block's
		// count beyond a few: each takes at least a byte, so a lying count
		// ends at the payload's end (an error: the map way then decides).
		return func(r *avro.Reader) any {
			var list []any
			for r.Error == nil {
				n, _ := r.ReadBlockHeader()
				if n == 0 {
					break
				}
				if list == nil && n > 0 {
					list = make([]any, 0, min(n, 16))
				}
				for ; n > 0 && r.Error == nil; n-- {
					list = append(list, item(r))
				}
			}
			if list == nil {
				list = []any{} // as hamba/avro decodes an empty array
			}
			return list
		}
	case avro.Boolean:
		return func(r *avro.Reader) any { return r.ReadBool() }
	case avro.Int:
		switch logical {
		case "":
			return func(r *avro.Reader) any { return int(r.ReadInt()) }
		case avro.Date:
			return func(r *avro.Reader) any { return dateOf(r.ReadInt()) }
		case avro.TimeMillis:
			return func(r *avro.Reader) any { return time.Duration(r.ReadInt()) * time.Millisecond }
		}
	case avro.Long:
		switch logical {
		case "":
			return func(r *avro.Reader) any { return r.ReadLong() }
		case avro.TimeMicros:
			return func(r *avro.Reader) any { return time.Duration(r.ReadLong()) * time.Microsecond }
		case avro.TimestampMicros:
			return func(r *avro.Reader) any { return instantOfMicros(r.ReadLong()) }
		case avro.TimestampMillis:
			return func(r *avro.Reader) any { return instantOfMillis(r.ReadLong()) }
		}
	case avro.Float:
		if logical == "" {
			return func(r *avro.Reader) any { return r.ReadFloat() }
		}
	case avro.Double:
		if logical == "" {
			return func(r *avro.Reader) any { return r.ReadDouble() }
		}
	case avro.String:
		if logical == "" || logical == avro.UUID {
			return func(r *avro.Reader) any { return r.ReadString() }
		}
	case avro.Bytes:
		switch logical {
		case "":
			return func(r *avro.Reader) any { return r.ReadBytes() }
		case avro.Decimal:
			scale := s.(avro.LogicalTypeSchema).Logical().(*avro.DecimalLogicalSchema).Scale()
			return func(r *avro.Reader) any { return ratFromTwosComplement(r.ReadBytes(), scale) }
		}
	}
	return nil
}

// nullable returns the non-null branch of a union of null and one other
// type, and the null branch's index; ok is false for any other union.
func nullable(u *avro.UnionSchema) (branch avro.Schema, null int64, ok bool) {
	types := u.Types()
	if len(types) != 2 || (types[0].Type() == avro.Null) == (types[1].Type() == avro.Null) {
		return nil, 0, false
	}
	if types[1].Type() == avro.Null {
		null = 1
	}
	return types[1-null], null, true
}

// dateOf, instantOfMicros and instantOfMillis are the times Avro's date,
// timestamp-micros and timestamp-millis values are, in UTC, as hamba/avro
// decodes them.
func dateOf(days int32) time.Time {
	return time.Unix(int64(days)*int64(24*time.Hour/time.Second), 0).UTC()
}

func instantOfMicros(i int64) time.Time {
	sec := i / 1e6
	return time.Unix(sec, (i-sec*1e6)*1e3).UTC()
}

func instantOfMillis(i int64) time.Time {
	sec := i / 1e3
	return time.Unix(sec, (i-sec*1e3)*1e6).UTC()
}

// ratFromTwosComplement is an Avro decimal's value: its bytes are the
// big-endian two's-complement unscaled integer (as hamba/avro reads it).
func ratFromTwosComplement(b []byte, scale int) *big.Rat {
	if len(b) <= 8 && scale < len(pow10) { // without big.Int allocations
		var n int64
		for _, c := range b {
			n = n<<8 | int64(c)
		}
		if len(b) > 0 && len(b) < 8 && b[0]&0x80 != 0 {
			n -= 1 << (8 * len(b)) // sign-extend
		}
		if n == math.MinInt64 { // no absolute value in an int64
			return new(big.Rat).SetFrac64(n, pow10[scale])
		}
		// Reduced here, in 64 bits, rather than by SetFrac64, whose
		// normalisation takes a big.Int GCD with its allocations (a tenth
		// of a rebuild's decoding): the Rat is set in its normal form
		// (numerator and denominator coprime), as SetFrac64 leaves it.
		den := uint64(pow10[scale])
		g := gcd64(uint64(max(n, -n)), den)
		r := new(big.Rat).SetInt64(n / int64(g))
		if den /= g; den != 1 {
			r.Denom().SetUint64(den) // a reference once the Rat is set
		}
		return r
	}
	num := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		num.Sub(num, new(big.Int).Lsh(big.NewInt(1), uint(len(b))*8))
	}
	denom := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	return new(big.Rat).SetFrac(num, denom)
}

// gcd64 is the greatest common divisor of a and b (b when a is zero).
func gcd64(a, b uint64) uint64 {
	for a != 0 {
		a, b = b%a, a
	}
	return b
}

// pow10 are the powers of ten an int64 holds.
var pow10 = func() (p [19]int64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// readDirect reads payload into vals by ops; false when the bytes could
// not be read (vals then hold partial values).
func (d *recordDecoder) readDirect(ops []fieldOp, payload []byte, vals []any) bool {
	r := d.r
	r.Reset(payload)
	r.Error = nil
	for i := range ops {
		op := &ops[i]
		switch {
		case op.slot < 0:
			skipValue(r, op.writer)
		case op.read != nil:
			vals[op.slot] = op.read(r)
		default:
			var v any
			r.ReadVal(op.writer, &v)
			vals[op.slot] = unwrapUnions(op.reader, v)
		}
		if r.Error != nil {
			return false
		}
	}
	return true
}

// skipValue reads past a value of schema s without building it.
func skipValue(r *avro.Reader, s avro.Schema) {
	switch s.Type() {
	case avro.Null:
	case avro.Boolean:
		r.SkipBool()
	case avro.Int, avro.Enum:
		r.SkipInt()
	case avro.Long:
		r.SkipLong()
	case avro.Float:
		r.SkipFloat()
	case avro.Double:
		r.SkipDouble()
	case avro.String:
		r.SkipString()
	case avro.Bytes:
		r.SkipBytes()
	case avro.Fixed:
		r.SkipNBytes(s.(*avro.FixedSchema).Size())
	case avro.Ref:
		skipValue(r, s.(*avro.RefSchema).Schema())
	case avro.Record:
		for _, f := range s.(*avro.RecordSchema).Fields() {
			skipValue(r, f.Type())
			if r.Error != nil {
				return
			}
		}
	case avro.Union:
		types := s.(*avro.UnionSchema).Types()
		i := r.ReadLong()
		if i < 0 || i >= int64(len(types)) {
			r.ReportError("skip union", "unknown union branch")
			return
		}
		skipValue(r, types[i])
	case avro.Array:
		skipBlocks(r, func() { skipValue(r, s.(*avro.ArraySchema).Items()) })
	case avro.Map:
		skipBlocks(r, func() { r.SkipString(); skipValue(r, s.(*avro.MapSchema).Values()) })
	default:
		r.ReportError("skip", "unexpected schema type "+string(s.Type()))
	}
}

// skipBlocks reads past an array's or a map's blocks, skipping each item
// with item (or a whole block at once when the writer gave its size).
func skipBlocks(r *avro.Reader, item func()) {
	total := int64(0)
	for r.Error == nil {
		n, size := r.ReadBlockHeader()
		if n == 0 || r.Error != nil {
			return
		}
		if size > 0 {
			r.SkipNBytes(int(size))
			continue
		}
		// Items of no bytes (null, an empty record) would let a few
		// bytes claim 2^60 of them: no record holds more than its bytes
		// could count.
		if total += n; n < 0 || total > maxValueBytes {
			r.ReportError("skip", "an array or map of more items than a record may hold")
			return
		}
		for ; n > 0 && r.Error == nil; n-- {
			item()
		}
	}
}

// slotsPerSlab is how many decoded values one allocation holds.
const slotsPerSlab = 4096

// slots returns n zeroed slots for a decoded record, cut from a slab that
// later records share: one allocation per few thousand fields instead of
// one per record. A slab lives as long as a record cut from it.
func (d *recordDecoder) slots(n int) []any {
	if n > slotsPerSlab/4 {
		return make([]any, n)
	}
	if len(d.slab) < n {
		d.slab = make([]any, slotsPerSlab)
	}
	s := d.slab[:n:n]
	d.slab = d.slab[n:]
	return s
}
