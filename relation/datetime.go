package relation

import "time"

// Dates and times are parsed by hand rather than with time.Parse: the ISO
// output is fixed-width apart from the year and the fraction, time.Parse
// knows neither the " BC" suffix nor years past 9999, and doing it by hand
// is several times faster (see BenchmarkDecodeTimestampTZ and
// BenchmarkTimeParseLayout).
//
// PostgreSQL counts dates in the proleptic Gregorian calendar, as Go does;
// its year N BC is Go's (astronomical) year 1-N, so 1 BC is year 0 and is a
// leap year.

// parseDateTime parses date_out, timestamp_out or timestamptz_out text in the
// ISO DateStyle:
//
//	Date         YYYY-MM-DD[ BC]
//	Timestamp    YYYY-MM-DD HH:MM:SS[.ffffff][ BC]
//	TimestampTZ  YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]][ BC]
//
// The year has 4 to 7 digits. The result is in UTC: a Timestamp's wall clock
// is taken as UTC, a TimestampTZ is moved to UTC by its offset.
func parseDateTime(kind Kind, s []byte) (time.Time, error) {
	if isInfinity(s) {
		return time.Time{}, ErrInfinity
	}
	var year int64
	i := 0
	for i < len(s) && i < 8 && isDigit(s[i]) {
		year = year*10 + int64(s[i]-'0')
		i++
	}
	if i < 4 || i > 7 || i+6 > len(s) || s[i] != '-' || s[i+3] != '-' {
		return time.Time{}, errSyntax
	}
	month, ok1 := digits2(s, i+1)
	day, ok2 := digits2(s, i+4)
	if !ok1 || !ok2 {
		return time.Time{}, errSyntax
	}
	i += 6

	var sod, nsec, off int64
	if kind != Date {
		if i == len(s) || s[i] != ' ' {
			return time.Time{}, errSyntax
		}
		i++
		n, hour, secs, ns, err := parseClock(s[i:])
		if err != nil {
			return time.Time{}, err
		}
		if hour > 23 {
			return time.Time{}, errFieldRange
		}
		i += n
		sod, nsec = secs, ns
		if kind == TimestampTZ {
			n, o, err := parseOffset(s[i:])
			if err != nil {
				return time.Time{}, err
			}
			i += n
			off = o
		}
	}
	bc := false
	if len(s)-i == 3 && s[i] == ' ' && s[i+1] == 'B' && s[i+2] == 'C' {
		bc = true
		i += 3
	}
	if i != len(s) {
		return time.Time{}, errSyntax
	}

	if year == 0 || month < 1 || month > 12 {
		return time.Time{}, errFieldRange
	}
	if bc {
		year = 1 - year
	}
	if day < 1 || day > daysIn(month, year) {
		return time.Time{}, errFieldRange
	}
	unix := daysFromCivil(year, month, day)*86400 + sod - off
	return time.Unix(unix, nsec).UTC(), nil
}

// parseTimeOfDay parses time_out text, HH:MM:SS[.ffffff], as the duration
// since midnight. 24:00:00 is a valid time and is 24h.
func parseTimeOfDay(s []byte) (time.Duration, error) {
	n, hour, secs, nsec, err := parseClock(s)
	if err != nil {
		return 0, err
	}
	if n != len(s) {
		return 0, errSyntax
	}
	if hour > 24 || hour == 24 && (secs != 24*60*60 || nsec != 0) {
		return 0, errFieldRange
	}
	return time.Duration(secs)*time.Second + time.Duration(nsec), nil
}

// parseClock parses HH:MM:SS[.f{1,9}] at the start of s. It returns how many
// bytes it read, the hour, the seconds since midnight and the nanoseconds. The
// caller checks the hour; minutes and seconds must be below 60.
func parseClock(s []byte) (n, hour int, secs, nsec int64, err error) {
	if len(s) < 8 || s[2] != ':' || s[5] != ':' {
		return 0, 0, 0, 0, errSyntax
	}
	h, ok1 := digits2(s, 0)
	m, ok2 := digits2(s, 3)
	sec, ok3 := digits2(s, 6)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, 0, errSyntax
	}
	if m > 59 || sec > 59 {
		return 0, 0, 0, 0, errFieldRange
	}
	n = 8
	if n < len(s) && s[n] == '.' {
		n++
		start := n
		for n < len(s) && isDigit(s[n]) {
			if n-start == 9 {
				return 0, 0, 0, 0, errSyntax // finer than a nanosecond
			}
			nsec = nsec*10 + int64(s[n]-'0')
			n++
		}
		if n == start {
			return 0, 0, 0, 0, errSyntax
		}
		for d := n - start; d < 9; d++ {
			nsec *= 10
		}
	}
	return n, h, int64(h*3600 + m*60 + sec), nsec, nil
}

// parseOffset parses a zone offset ±HH[:MM[:SS]] at the start of s and
// returns how many bytes it read and the offset in seconds east of UTC.
// PostgreSQL limits offsets to less than 16 hours.
func parseOffset(s []byte) (n int, off int64, err error) {
	if len(s) < 3 || s[0] != '+' && s[0] != '-' {
		return 0, 0, errSyntax
	}
	h, ok := digits2(s, 1)
	if !ok {
		return 0, 0, errSyntax
	}
	var m, sec int
	n = 3
	if n < len(s) && s[n] == ':' {
		if m, ok = digits2(s, n+1); !ok {
			return 0, 0, errSyntax
		}
		n += 3
		if n < len(s) && s[n] == ':' {
			if sec, ok = digits2(s, n+1); !ok {
				return 0, 0, errSyntax
			}
			n += 3
		}
	}
	if h > 15 || m > 59 || sec > 59 {
		return 0, 0, errFieldRange
	}
	off = int64(h*3600 + m*60 + sec)
	if s[0] == '-' {
		off = -off
	}
	return n, off, nil
}

// digits2 reads the two decimal digits at s[i:i+2].
func digits2(s []byte, i int) (int, bool) {
	if i < 0 || i+2 > len(s) {
		return 0, false
	}
	a, b := s[i]-'0', s[i+1]-'0'
	if a > 9 || b > 9 {
		return 0, false
	}
	return int(a)*10 + int(b), true
}

func isInfinity(s []byte) bool {
	return string(s) == "infinity" || string(s) == "-infinity"
}

// daysIn returns the number of days of month in the astronomical year.
func daysIn(month int, year int64) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days from 1970-01-01 to the given proleptic
// Gregorian date (astronomical year), for any year: Howard Hinnant's
// days_from_civil, which counts in 400-year eras starting in March.
func daysFromCivil(year int64, month, day int) int64 {
	if month <= 2 {
		year--
	}
	era := year
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := year - era*400                  // [0, 399]
	mp := int64(month+9) % 12              // March is 0
	doy := (153*mp+2)/5 + int64(day) - 1   // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return era*146097 + doe - 719468       // 719468: 0000-03-01 to 1970-01-01
}
