package mapping

import (
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"strings"
)

// encDecimal encodes a numeric(p,s) value, given as PostgreSQL's text, as an
// Avro bytes decimal: the two's-complement big-endian bytes of the unscaled
// integer (value × 10^scale).
func encDecimal(precision, scale int) encodeFunc {
	return func(dst []byte, v any) ([]byte, error) {
		s, ok := v.(string)
		if !ok {
			return dst, wrongType(v, "string")
		}
		return appendDecimal(dst, s, precision, scale)
	}
}

// appendDecimal parses a plain decimal ("-12.5", "0.001", "42") exactly, checks
// it against precision and scale without rounding, and appends it as an Avro
// bytes decimal. Fewer fractional digits than scale are padded with zeros;
// more are an error unless they are zeros.
func appendDecimal(dst []byte, s string, precision, scale int) ([]byte, error) {
	num := s
	neg := false
	if num != "" && (num[0] == '-' || num[0] == '+') {
		neg = num[0] == '-'
		num = num[1:]
	}
	intPart, frac, _ := strings.Cut(num, ".")
	if (intPart == "" && frac == "") || !allDigits(intPart) || !allDigits(frac) {
		switch s {
		case "NaN", "Infinity", "-Infinity":
			// A copy, so that s does not escape: the text path converts
			// []byte to string on the stack to call this.
			return dst, fmt.Errorf("%s cannot be represented as an Avro decimal: list it in as_string: to export this column as text", strings.Clone(s))
		}
		return dst, errors.New("numeric text is not a plain decimal number")
	}
	if len(frac) > scale {
		if strings.TrimRight(frac[scale:], "0") != "" {
			return dst, fmt.Errorf("numeric value has %d fractional digits, more than scale %d", len(frac), scale)
		}
		frac = frac[:scale]
	}
	intPart = strings.TrimLeft(intPart, "0")
	if len(intPart) > precision-scale {
		return dst, fmt.Errorf("numeric value has %d integer digits, more than precision %d with scale %d allows", len(intPart), precision, scale)
	}

	digits := len(intPart) + scale // at most precision
	if digits <= 18 {              // fits an int64 exactly
		var u uint64
		for i := 0; i < len(intPart); i++ {
			u = u*10 + uint64(intPart[i]-'0')
		}
		for i := 0; i < scale; i++ {
			u *= 10
			if i < len(frac) {
				u += uint64(frac[i] - '0')
			}
		}
		x := int64(u)
		if neg {
			x = -x
		}
		return appendDecimalInt64(dst, x), nil
	}

	buf := make([]byte, 0, digits)
	buf = append(buf, intPart...)
	buf = append(buf, frac...)
	for len(buf) < digits {
		buf = append(buf, '0')
	}
	x, _ := new(big.Int).SetString(string(buf), 10) // digits only: cannot fail
	if neg {
		x.Neg(x)
	}
	return appendDecimalBig(dst, x), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// decimalLen is the byte length of an unscaled value whose magnitude has the
// given bit length: one sign bit more, rounded up to whole bytes. It is the
// length hamba/avro writes, so both encoders agree byte for byte (for some
// negative values it is one byte more than the minimum; readers accept any
// sign-extended length).
func decimalLen(bitLen int) int { return bitLen/8 + 1 }

func appendDecimalInt64(dst []byte, x int64) []byte {
	abs := uint64(x)
	if x < 0 {
		abs = -abs
	}
	n := decimalLen(bits.Len64(abs))
	dst = appendLong(dst, int64(n))
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(uint64(x)>>(8*i)))
	}
	return dst
}

func appendDecimalBig(dst []byte, x *big.Int) []byte {
	n := decimalLen(x.BitLen()) // BitLen is that of |x|
	if x.Sign() < 0 {
		// Two's complement in n bytes: 2^(8n) + x.
		x = new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), uint(8*n)), x)
	}
	dst = appendLong(dst, int64(n))
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	x.FillBytes(dst[start:])
	return dst
}

// decimalText renders Avro decimal bytes with the given scale as PostgreSQL
// prints a numeric(p,s): optional "-", at least one integer digit, and
// exactly scale fractional digits.
func decimalText(b []byte, scale int) string {
	var digits string
	neg := len(b) > 0 && b[0]&0x80 != 0
	if len(b) <= 8 {
		var x int64
		if neg {
			x = -1
		}
		for _, c := range b {
			x = x<<8 | int64(c)
		}
		if neg {
			digits = big.NewInt(x).String()[1:] // magnitude of MinInt64 too
		} else {
			digits = big.NewInt(x).String()
		}
	} else {
		x := new(big.Int).SetBytes(b)
		if neg {
			x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
			x.Neg(x)
		}
		digits = x.String()
	}
	if len(digits) <= scale {
		digits = strings.Repeat("0", scale-len(digits)+1) + digits
	}
	var sb strings.Builder
	sb.Grow(len(digits) + 2)
	if neg {
		sb.WriteByte('-')
	}
	sb.WriteString(digits[:len(digits)-scale])
	if scale > 0 {
		sb.WriteByte('.')
		sb.WriteString(digits[len(digits)-scale:])
	}
	return sb.String()
}
