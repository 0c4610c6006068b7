package barereader

import (
	"slices"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 1, 1, 0, 16, 40, 123456000, time.UTC)
	tests := []struct {
		name string
		oid  uint32
		in   string
		want value
	}{
		{"bool", oidBool, "t", value{i: 1}},
		{"int8", oidInt8, "-9000000000", value{i: -9000000000}},
		{"int4", oidInt4, "42", value{i: 42}},
		{"numeric", oidNumeric, "-123.45", value{i: -12345, exp: 2}},
		{"numeric too long", oidNumeric, "1234567890123456789.5", value{s: "1234567890123456789.5"}},
		{"float", oidFloat8, "1.5", value{f: 1.5}},
		{"timestamptz", oidTimestamptz, "2024-01-01 00:16:40.123456+00", value{t: ts}},
		{"text", oidText, "hello", value{s: "hello"}},
		{"jsonb", oidJSONB, `{"a": 1}`, value{s: `{"a": 1}`}},
		{"text[]", oidTextArray, `{a,"b c","d\"e",NULL}`, value{arr: []string{"a", "b c", `d"e`, ""}}},
		{"empty text[]", oidTextArray, `{}`, value{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got value
			if err := decode(tt.oid, []byte(tt.in), &got); err != nil {
				t.Fatalf("decode %q: %v", tt.in, err)
			}
			if got.i != tt.want.i || got.f != tt.want.f || got.s != tt.want.s || got.exp != tt.want.exp ||
				!got.t.Equal(tt.want.t) || !slices.Equal(got.arr, tt.want.arr) {
				t.Errorf("decode %q: got %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		oid  uint32
		in   string
	}{
		{"bool", oidBool, "yes"},
		{"int", oidInt4, "4x"},
		{"empty int", oidInt8, ""},
		{"timestamptz", oidTimestamptz, "yesterday"},
		{"array", oidTextArray, `{"a`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var v value
			if err := decode(tt.oid, []byte(tt.in), &v); err == nil {
				t.Errorf("decode %q: got no error, want one", tt.in)
			}
		})
	}
}

func TestIsRowChange(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{"I...": true, "U...": true, "D...": true, "B...": false, "C...": false, "R...": false, "T...": false, "": false} {
		if got := isRowChange([]byte(in)); got != want {
			t.Errorf("isRowChange(%q): got %v, want %v", in, got, want)
		}
	}
}

func TestDeadlineStale(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	wait := now.Add(250 * time.Millisecond)
	tests := []struct {
		name string
		set  time.Time
		want bool
	}{
		{"never set", time.Time{}, true},
		{"passed", now.Add(-time.Millisecond), true},
		{"due now", now, true},
		{"holds", now.Add(100 * time.Millisecond), false},
		{"same as wait", wait, false},
		{"later than wait", wait.Add(time.Millisecond), true},
	}
	for _, tt := range tests {
		if got := deadlineStale(now, tt.set, wait); got != tt.want {
			t.Errorf("%s: deadlineStale = %v, want %v", tt.name, got, tt.want)
		}
	}
}
