package relation

import (
	"strconv"
	"testing"
	"time"
)

func utc(year int, month time.Month, day, hour, min, sec, nsec int) time.Time {
	return time.Date(year, month, day, hour, min, sec, nsec, time.UTC)
}

func TestDecodeTextDate(t *testing.T) {
	t.Parallel()
	date := Type{Kind: Date}
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: date, in: "2024-01-31", want: utc(2024, 1, 31, 0, 0, 0, 0)},
		{name: "epoch", typ: date, in: "1970-01-01", want: utc(1970, 1, 1, 0, 0, 0, 0)},
		{name: "leap day", typ: date, in: "2024-02-29", want: utc(2024, 2, 29, 0, 0, 0, 0)},
		{name: "leap day 2000", typ: date, in: "2000-02-29", want: utc(2000, 2, 29, 0, 0, 0, 0)},
		{name: "year 1", typ: date, in: "0001-01-01", want: utc(1, 1, 1, 0, 0, 0, 0)},
		{name: "BC", typ: date, in: "0044-03-15 BC", want: utc(-43, 3, 15, 0, 0, 0, 0)},
		{name: "1 BC is year 0", typ: date, in: "0001-12-31 BC", want: utc(0, 12, 31, 0, 0, 0, 0)},
		{name: "1 BC is a leap year", typ: date, in: "0001-02-29 BC", want: utc(0, 2, 29, 0, 0, 0, 0)},
		{name: "5 BC is a leap year", typ: date, in: "0005-02-29 BC", want: utc(-4, 2, 29, 0, 0, 0, 0)},
		{name: "earliest", typ: date, in: "4713-01-01 BC", want: utc(-4712, 1, 1, 0, 0, 0, 0)},
		{name: "year 9999", typ: date, in: "9999-12-31", want: utc(9999, 12, 31, 0, 0, 0, 0)},
		{name: "five-digit year", typ: date, in: "10000-01-01", want: utc(10000, 1, 1, 0, 0, 0, 0)},
		{name: "latest", typ: date, in: "5874897-12-31", want: utc(5874897, 12, 31, 0, 0, 0, 0)},
		{name: "infinity", typ: date, in: "infinity", wantErr: `parse date "infinity": infinite`, errIs: ErrInfinity},
		{name: "-infinity", typ: date, in: "-infinity", errIs: ErrInfinity},
		{name: "not a leap year", typ: date, in: "2023-02-29", wantErr: "field value out of range"},
		{name: "1900 is not a leap year", typ: date, in: "1900-02-29", errIs: errFieldRange},
		{name: "2 BC is not a leap year", typ: date, in: "0002-02-29 BC", errIs: errFieldRange},
		{name: "April 31", typ: date, in: "2024-04-31", errIs: errFieldRange},
		{name: "month 13", typ: date, in: "2024-13-01", errIs: errFieldRange},
		{name: "month 0", typ: date, in: "2024-00-01", errIs: errFieldRange},
		{name: "day 0", typ: date, in: "2024-01-00", errIs: errFieldRange},
		{name: "year 0", typ: date, in: "0000-01-01", errIs: errFieldRange},
		{name: "three-digit year", typ: date, in: "999-01-01", errIs: strconv.ErrSyntax},
		{name: "eight-digit year", typ: date, in: "10000000-01-01", errIs: strconv.ErrSyntax},
		{name: "one-digit month", typ: date, in: "2024-1-31", errIs: strconv.ErrSyntax},
		{name: "slashes", typ: date, in: "2024/01/31", errIs: strconv.ErrSyntax},
		{name: "time part", typ: date, in: "2024-01-31 00:00:00", errIs: strconv.ErrSyntax},
		{name: "lower-case bc", typ: date, in: "0044-03-15 bc", errIs: strconv.ErrSyntax},
		{name: "AD", typ: date, in: "2024-01-31 AD", errIs: strconv.ErrSyntax},
		{name: "empty", typ: date, in: "", wantErr: `parse date "": invalid syntax`},
		{name: "Infinity capitalised", typ: date, in: "Infinity", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextTime(t *testing.T) {
	t.Parallel()
	tm := Type{Kind: Time}
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: tm, in: "13:45:06.123456", want: 13*time.Hour + 45*time.Minute + 6*time.Second + 123456*time.Microsecond},
		{name: "midnight", typ: tm, in: "00:00:00", want: time.Duration(0)},
		{name: "last microsecond", typ: tm, in: "23:59:59.999999", want: 24*time.Hour - time.Microsecond},
		{name: "24:00:00", typ: tm, in: "24:00:00", want: 24 * time.Hour},
		{name: "fraction 1 digit", typ: tm, in: "00:00:00.1", want: 100 * time.Millisecond},
		{name: "fraction 2 digits", typ: tm, in: "00:00:00.12", want: 120 * time.Millisecond},
		{name: "fraction 3 digits", typ: tm, in: "00:00:00.123", want: 123 * time.Millisecond},
		{name: "fraction 4 digits", typ: tm, in: "00:00:00.0001", want: 100 * time.Microsecond},
		{name: "fraction 5 digits", typ: tm, in: "00:00:00.00001", want: 10 * time.Microsecond},
		{name: "fraction 6 digits", typ: tm, in: "00:00:00.000001", want: time.Microsecond},
		{name: "fraction 9 digits", typ: tm, in: "00:00:00.000000001", want: time.Nanosecond},
		{name: "fraction 10 digits", typ: tm, in: "00:00:00.0000000001", errIs: strconv.ErrSyntax},
		{name: "past 24:00:00", typ: tm, in: "24:00:00.000001", wantErr: `parse time "24:00:00.000001": date/time field value out of range`},
		{name: "24:00:01", typ: tm, in: "24:00:01", errIs: errFieldRange},
		{name: "hour 25", typ: tm, in: "25:00:00", errIs: errFieldRange},
		{name: "minute 60", typ: tm, in: "12:60:00", errIs: errFieldRange},
		{name: "second 60", typ: tm, in: "12:00:60", errIs: errFieldRange},
		{name: "empty fraction", typ: tm, in: "12:00:00.", errIs: strconv.ErrSyntax},
		{name: "no seconds", typ: tm, in: "12:00", errIs: strconv.ErrSyntax},
		{name: "one-digit hour", typ: tm, in: "1:00:00", errIs: strconv.ErrSyntax},
		{name: "zone", typ: tm, in: "12:00:00+00", errIs: strconv.ErrSyntax},
		{name: "empty", typ: tm, in: "", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextTimestamp(t *testing.T) {
	t.Parallel()
	ts := Type{Kind: Timestamp}
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: ts, in: "2024-01-31 13:45:06.123456", want: utc(2024, 1, 31, 13, 45, 6, 123456000)},
		{name: "no fraction", typ: ts, in: "2024-01-31 13:45:06", want: utc(2024, 1, 31, 13, 45, 6, 0)},
		{name: "fraction 1 digit", typ: ts, in: "2024-01-31 13:45:06.5", want: utc(2024, 1, 31, 13, 45, 6, 500000000)},
		{name: "fraction 2 digits", typ: ts, in: "2024-01-31 13:45:06.05", want: utc(2024, 1, 31, 13, 45, 6, 50000000)},
		{name: "fraction 3 digits", typ: ts, in: "2024-01-31 13:45:06.123", want: utc(2024, 1, 31, 13, 45, 6, 123000000)},
		{name: "fraction 4 digits", typ: ts, in: "2024-01-31 13:45:06.1234", want: utc(2024, 1, 31, 13, 45, 6, 123400000)},
		{name: "fraction 5 digits", typ: ts, in: "2024-01-31 13:45:06.12345", want: utc(2024, 1, 31, 13, 45, 6, 123450000)},
		{name: "fraction 6 digits", typ: ts, in: "2024-01-31 13:45:06.000001", want: utc(2024, 1, 31, 13, 45, 6, 1000)},
		{name: "leap day", typ: ts, in: "2024-02-29 23:59:59.999999", want: utc(2024, 2, 29, 23, 59, 59, 999999000)},
		{name: "year 1", typ: ts, in: "0001-01-01 00:00:00", want: utc(1, 1, 1, 0, 0, 0, 0)},
		{name: "BC", typ: ts, in: "0044-03-15 12:00:00 BC", want: utc(-43, 3, 15, 12, 0, 0, 0)},
		{name: "BC with fraction", typ: ts, in: "0001-12-31 23:59:59.5 BC", want: utc(0, 12, 31, 23, 59, 59, 500000000)},
		{name: "earliest", typ: ts, in: "4713-01-01 00:00:00 BC", want: utc(-4712, 1, 1, 0, 0, 0, 0)},
		{name: "latest", typ: ts, in: "294276-12-31 23:59:59.999999", want: utc(294276, 12, 31, 23, 59, 59, 999999000)},
		{name: "infinity", typ: ts, in: "infinity", wantErr: `parse timestamp "infinity"`, errIs: ErrInfinity},
		{name: "-infinity", typ: ts, in: "-infinity", errIs: ErrInfinity},
		{name: "24:00:00", typ: ts, in: "2024-01-31 24:00:00", errIs: errFieldRange},
		{name: "not a leap day", typ: ts, in: "2023-02-29 00:00:00", errIs: errFieldRange},
		{name: "zone", typ: ts, in: "2024-01-31 13:45:06+00", wantErr: `parse timestamp "2024-01-31 13:45:06+00": invalid syntax`},
		{name: "T separator", typ: ts, in: "2024-01-31T13:45:06", errIs: strconv.ErrSyntax},
		{name: "date only", typ: ts, in: "2024-01-31", errIs: strconv.ErrSyntax},
		{name: "BC before fraction", typ: ts, in: "0044-03-15 12:00:00 BC.5", errIs: strconv.ErrSyntax},
		{name: "trailing space", typ: ts, in: "2024-01-31 13:45:06 ", errIs: strconv.ErrSyntax},
	})
}

func TestDecodeTextTimestampTZ(t *testing.T) {
	t.Parallel()
	tz := Type{Kind: TimestampTZ}
	runDecodeCases(t, []decodeCase{
		{name: "typical", typ: tz, in: "2024-01-31 13:45:06.123456+00", want: utc(2024, 1, 31, 13, 45, 6, 123456000)},
		{name: "no fraction", typ: tz, in: "2024-01-31 13:45:06+00", want: utc(2024, 1, 31, 13, 45, 6, 0)},
		{name: "half-hour offset", typ: tz, in: "2024-01-01 05:30:00+05:30", want: utc(2024, 1, 1, 0, 0, 0, 0)},
		{name: "negative offset", typ: tz, in: "2024-01-31 05:45:06-08", want: utc(2024, 1, 31, 13, 45, 6, 0)},
		{name: "offset seconds", typ: tz, in: "1850-01-01 05:53:28+05:53:28", want: utc(1850, 1, 1, 0, 0, 0, 0)},
		{name: "negative offset seconds", typ: tz, in: "1849-12-31 16:07:02-07:52:58", want: utc(1850, 1, 1, 0, 0, 0, 0)},
		{name: "offset +05:30:15", typ: tz, in: "2024-01-31 13:45:06.5+05:30:15", want: utc(2024, 1, 31, 8, 14, 51, 500000000)},
		{name: "offset crosses a day", typ: tz, in: "2024-12-31 23:00:00-02", want: utc(2025, 1, 1, 1, 0, 0, 0)},
		{name: "offset crosses a leap day", typ: tz, in: "2024-03-01 01:00:00+02", want: utc(2024, 2, 29, 23, 0, 0, 0)},
		{name: "BC", typ: tz, in: "0044-03-15 12:00:00+00:19:32 BC", want: utc(-43, 3, 15, 11, 40, 28, 0)},
		{name: "year 1", typ: tz, in: "0001-01-01 00:00:00+00", want: utc(1, 1, 1, 0, 0, 0, 0)},
		{name: "latest", typ: tz, in: "294276-12-31 23:59:59.999999+00", want: utc(294276, 12, 31, 23, 59, 59, 999999000)},
		{name: "largest offset", typ: tz, in: "2024-01-31 15:59:59+15:59:59", want: utc(2024, 1, 31, 0, 0, 0, 0)},
		{name: "infinity", typ: tz, in: "infinity", errIs: ErrInfinity},
		{name: "-infinity", typ: tz, in: "-infinity", wantErr: `parse timestamptz "-infinity"`, errIs: ErrInfinity},
		{name: "no offset", typ: tz, in: "2024-01-31 13:45:06", wantErr: `parse timestamptz "2024-01-31 13:45:06": invalid syntax`},
		{name: "offset hour 16", typ: tz, in: "2024-01-31 13:45:06+16", errIs: errFieldRange},
		{name: "offset minute 60", typ: tz, in: "2024-01-31 13:45:06+05:60", errIs: errFieldRange},
		{name: "one-digit offset", typ: tz, in: "2024-01-31 13:45:06+5", errIs: strconv.ErrSyntax},
		{name: "Z", typ: tz, in: "2024-01-31 13:45:06Z", errIs: strconv.ErrSyntax},
		{name: "offset without minutes", typ: tz, in: "2024-01-31 13:45:06+05:", errIs: strconv.ErrSyntax},
		{name: "zone name", typ: tz, in: "2024-01-31 13:45:06 UTC", errIs: strconv.ErrSyntax},
		{name: "BC before offset", typ: tz, in: "0044-03-15 12:00:00 BC+00", errIs: strconv.ErrSyntax},
	})
}

// formatPG prints v as PostgreSQL's ISO DateStyle output of kind does, with
// the wall clock at offset seconds east of UTC for a TimestampTZ. For Time,
// v's clock is printed (24:00:00 needs a Duration; see formatPGTime).
func formatPG(kind Kind, v time.Time, offset int) string {
	w := v.Add(time.Duration(offset) * time.Second)
	year := w.Year()
	bc := year <= 0
	if bc {
		year = 1 - year
	}
	b := make([]byte, 0, 48)
	b = appendPadded(b, year, 4)
	b = append(b, '-')
	b = appendPadded(b, int(w.Month()), 2)
	b = append(b, '-')
	b = appendPadded(b, w.Day(), 2)
	if kind != Date {
		b = append(b, ' ')
		b = appendClock(b, w.Hour(), w.Minute(), w.Second(), w.Nanosecond())
	}
	if kind == TimestampTZ {
		b = appendOffset(b, offset)
	}
	if bc {
		b = append(b, " BC"...)
	}
	return string(b)
}

func formatPGTime(d time.Duration) string {
	ns := int(d % time.Second)
	s := int(d / time.Second)
	return string(appendClock(nil, s/3600, s/60%60, s%60, ns))
}

func appendClock(b []byte, h, m, s, ns int) []byte {
	b = appendPadded(b, h, 2)
	b = append(b, ':')
	b = appendPadded(b, m, 2)
	b = append(b, ':')
	b = appendPadded(b, s, 2)
	if ns != 0 {
		frac := appendPadded(nil, ns, 9)
		for frac[len(frac)-1] == '0' {
			frac = frac[:len(frac)-1]
		}
		b = append(append(b, '.'), frac...)
	}
	return b
}

func appendOffset(b []byte, off int) []byte {
	if off < 0 {
		b = append(b, '-')
		off = -off
	} else {
		b = append(b, '+')
	}
	b = appendPadded(b, off/3600, 2)
	if off%3600 != 0 {
		b = append(b, ':')
		b = appendPadded(b, off/60%60, 2)
		if off%60 != 0 {
			b = append(b, ':')
			b = appendPadded(b, off%60, 2)
		}
	}
	return b
}

func appendPadded(b []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// The range of PostgreSQL's timestamp: 4713-01-01 BC to 294276-12-31.
var (
	minTimestamp = utc(-4712, 1, 1, 0, 0, 0, 0)
	maxTimestamp = utc(294277, 1, 1, 0, 0, 0, 0).Add(-time.Nanosecond)
)

func FuzzDecodeTimestamp(f *testing.F) {
	f.Add(int64(0), uint32(0), int32(0), uint8(TimestampTZ))
	f.Add(utc(2024, 1, 31, 13, 45, 6, 0).Unix(), uint32(123456000), int32(19800), uint8(TimestampTZ))
	f.Add(minTimestamp.Unix(), uint32(0), int32(-57599), uint8(Timestamp))
	f.Add(maxTimestamp.Unix(), uint32(999999999), int32(57599), uint8(Date))
	f.Add(int64(-62135596800), uint32(1), int32(1), uint8(Time))
	f.Fuzz(func(t *testing.T, sec int64, nsec uint32, off int32, kindSel uint8) {
		kinds := [...]Kind{Date, Time, Timestamp, TimestampTZ}
		kind := kinds[int(kindSel)%len(kinds)]
		lo, hi := minTimestamp.Unix(), maxTimestamp.Unix()
		sec = lo + int64(uint64(sec)%uint64(hi-lo+1))
		offset := int(off % (16 * 3600))
		v := time.Unix(sec, int64(nsec%1e9)).UTC()
		// The wall clock at the offset must stay in range too.
		if w := v.Add(time.Duration(offset) * time.Second); w.Before(minTimestamp) || w.After(maxTimestamp) {
			offset = 0
		}

		var text string
		var want any
		switch kind {
		case Date:
			want = utc(v.Year(), v.Month(), v.Day(), 0, 0, 0, 0)
			text = formatPG(Date, want.(time.Time), 0)
		case Time:
			d := time.Duration(v.Hour())*time.Hour + time.Duration(v.Minute())*time.Minute +
				time.Duration(v.Second())*time.Second + time.Duration(v.Nanosecond())
			if nsec%7 == 0 && d == 0 {
				d = 24 * time.Hour // reach 24:00:00 now and then
			}
			want, text = d, formatPGTime(d)
		case Timestamp:
			want, text = v, formatPG(Timestamp, v, 0)
		case TimestampTZ:
			want, text = v, formatPG(TimestampTZ, v, offset)
		}
		got, err := DecodeText(&Type{Kind: kind}, []byte(text))
		if err != nil {
			t.Fatalf("DecodeText(%s, %q) error = %v, want %v", kind, text, err, want)
		}
		if !sameValue(got, want) {
			t.Fatalf("DecodeText(%s, %q) = %v, want %v", kind, text, got, want)
		}
	})
}

// FuzzDecodeTimestampText feeds arbitrary text to the date and time kinds. It
// must not panic; what it accepts must print back to text that decodes to
// the same value, and must agree with time.Parse where time.Parse can read it.
func FuzzDecodeTimestampText(f *testing.F) {
	for _, s := range []string{
		"2024-01-31", "0044-03-15 BC", "10000-01-01", "13:45:06.123456", "24:00:00",
		"2024-01-31 13:45:06.123456", "0001-12-31 23:59:59.5 BC",
		"2024-01-31 13:45:06.123456+00", "1850-01-01 05:53:28+05:53:28",
		"0044-03-15 12:00:00+00:19:32 BC", "infinity", "-infinity", "2023-02-29",
	} {
		for k := range 4 {
			f.Add(s, uint8(k))
		}
	}
	f.Fuzz(func(t *testing.T, s string, kindSel uint8) {
		kinds := [...]Kind{Date, Time, Timestamp, TimestampTZ}
		kind := kinds[int(kindSel)%len(kinds)]
		got, err := DecodeText(&Type{Kind: kind}, []byte(s))
		if err != nil {
			if got != nil {
				t.Fatalf("DecodeText(%s, %q) = %#v with error %v, want nil", kind, s, got, err)
			}
			return
		}
		var again string
		switch v := got.(type) {
		case time.Duration:
			again = formatPGTime(v)
		case time.Time:
			if v.Location() != time.UTC {
				t.Fatalf("DecodeText(%s, %q) location = %v, want UTC", kind, s, v.Location())
			}
			again = formatPG(kind, v, 0)
			if layout := map[Kind]string{
				Date:        "2006-01-02",
				Timestamp:   "2006-01-02 15:04:05.999999999",
				TimestampTZ: tzLayout(s),
			}[kind]; layout != "" && len(s) > 4 && s[4] == '-' && s[len(s)-1] != 'C' {
				want, err := time.Parse(layout, s)
				if err != nil {
					t.Fatalf("DecodeText(%s, %q) = %v, but time.Parse(%q) failed: %v", kind, s, v, layout, err)
				}
				if !want.Equal(v) {
					t.Fatalf("DecodeText(%s, %q) = %v, want %v as time.Parse reads it", kind, s, v, want)
				}
			}
		default:
			t.Fatalf("DecodeText(%s, %q) = %T, want a time", kind, s, got)
		}
		got2, err := DecodeText(&Type{Kind: kind}, []byte(again))
		if err != nil || !sameValue(got2, got) {
			t.Fatalf("DecodeText(%s, %q) = %v, %v after printing %q as %q, want %v", kind, again, got2, err, s, again, got)
		}
	})
}

// tzLayout returns the time.Parse layout for a timestamptz text's offset
// form, or "" when it has none.
func tzLayout(s string) string {
	for i := len(s) - 1; i > 10; i-- {
		if s[i] == '+' || s[i] == '-' {
			switch len(s) - i {
			case 3:
				return "2006-01-02 15:04:05.999999999-07"
			case 6:
				return "2006-01-02 15:04:05.999999999-07:00"
			case 9:
				return "2006-01-02 15:04:05.999999999-07:00:00"
			}
			return ""
		}
	}
	return ""
}

// timeParseTZ is DecodeText's timestamptz path written with time.Parse, kept
// to measure against: see BenchmarkTimeParseLayout.
func timeParseTZ(src []byte) (time.Time, error) {
	v, err := time.Parse("2006-01-02 15:04:05.999999999-07", string(src))
	if err != nil {
		return time.Time{}, err
	}
	return v.UTC(), nil
}

var benchTimestampTZ = []byte("2024-01-31 13:45:06.123456+00")

func BenchmarkDecodeTimestampTZ(b *testing.B) {
	typ := &Type{Kind: TimestampTZ}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, benchTimestampTZ); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTimeParseLayout is the time.Parse alternative to the hand-written
// parser, boxed the same way, for comparison with BenchmarkDecodeTimestampTZ.
func BenchmarkTimeParseLayout(b *testing.B) {
	want, err := DecodeText(&Type{Kind: TimestampTZ}, benchTimestampTZ)
	if err != nil {
		b.Fatal(err)
	}
	if got, err := timeParseTZ(benchTimestampTZ); err != nil || got != want {
		b.Fatalf("timeParseTZ = %v, %v, want %v", got, err, want)
	}
	b.ReportAllocs()
	var sink any
	for b.Loop() {
		v, err := timeParseTZ(benchTimestampTZ)
		if err != nil {
			b.Fatal(err)
		}
		sink = v
	}
	_ = sink
}

func BenchmarkDecodeDate(b *testing.B) {
	typ := &Type{Kind: Date}
	src := []byte("2024-01-31")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeText(typ, src); err != nil {
			b.Fatal(err)
		}
	}
}
