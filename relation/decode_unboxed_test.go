package relation

import (
	"errors"
	"strings"
	"testing"
)

// ScanArray hands over each element unescaped, NULL apart from "NULL",
// and returns an error of its callback as it is, after the elements
// before it; a syntax error is DecodeText's.
func TestScanArray(t *testing.T) {
	typ := &Type{Kind: Array, Name: "text[]", Elem: &Type{Kind: Text, Name: "text"}}
	var got []string
	n, err := ScanArray(typ, []byte(`{a,NULL,"NULL","b\"c",""}`), func(el []byte, null bool) error {
		if null != (el == nil) {
			t.Errorf("element %d: null %v but el nil %v", len(got)+1, null, el == nil)
		}
		if null {
			got = append(got, "<null>")
		} else {
			got = append(got, string(el))
		}
		return nil
	})
	want := []string{"a", "<null>", "NULL", `b"c`, ""}
	if err != nil || n != len(want) || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ScanArray: got %d %q, %v; want %d %q", n, got, err, len(want), want)
	}

	stop := errors.New("stop")
	seen := 0
	n, err = ScanArray(typ, []byte(`{a,b,c}`), func([]byte, bool) error {
		if seen++; seen == 2 {
			return stop
		}
		return nil
	})
	if err != stop || n != 1 {
		t.Errorf("callback error: got %d, %v; want 1 element and the callback's error itself", n, err)
	}

	_, err = ScanArray(typ, []byte(`{a,b`), func([]byte, bool) error { return nil })
	_, want2 := DecodeText(typ, []byte(`{a,b`))
	if err == nil || err.Error() != want2.Error() {
		t.Errorf("syntax error: got %v, want DecodeText's %v", err, want2)
	}
}

// An unboxed decoder called for another kind says so: a programming
// error, not bad data.
func TestUnboxedDecodersCheckTheKind(t *testing.T) {
	text := &Type{Kind: Text, Name: "text"}
	for name, err := range map[string]error{
		"DecodeInt":      second(DecodeInt(text, []byte("1"))),
		"DecodeFloat":    second(DecodeFloat(text, []byte("1"))),
		"CheckNumeric":   CheckNumeric(text, []byte("1")),
		"DecodeBool":     second(DecodeBool(text, []byte("t"))),
		"DecodeUUID":     second(DecodeUUID(text, []byte("0b0b3f0e-8f4e-4a3c-9d2b-7f1c3a2e5d6f"))),
		"DecodeDateTime": second(DecodeDateTime(text, []byte("2024-01-01"))),
		"ScanArray":      second(ScanArray(text, []byte("{}"), func([]byte, bool) error { return nil })),
	} {
		if err == nil || !strings.Contains(err.Error(), name+": kind text is not supported") {
			t.Errorf("%s of a text: got %v, want it to name %s and the kind", name, err, name)
		}
	}
}

func second[T any](_ T, err error) error { return err }
