package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

var durationType = reflect.TypeOf(time.Duration(0))

// strictScalars replaces mapstructure's weak typing, which read
// `partitions: 1.5` as 1, an empty `partitions:` string as 0 and `status_interval: 10`
// as 10 ns. YAML values keep their type; environment variables and flags are
// strings and parsed strictly. Every refusal says what to write instead.
func strictScalars(from, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType:
		return toDuration(data)
	case to.Kind() >= reflect.Int && to.Kind() <= reflect.Int64:
		return toInt(data, to)
	case to.Kind() == reflect.Bool:
		return toBool(data)
	case to.Kind() == reflect.String:
		return toString(data)
	}
	return data, nil
}

func toDuration(data any) (any, error) {
	switch v := data.(type) {
	case time.Duration:
		return v, nil
	case string:
		s := strings.TrimSpace(v)
		d, err := time.ParseDuration(s)
		if err == nil {
			return d, nil
		}
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			return nil, fmt.Errorf("%q has no unit: write e.g. %ss or %sms", v, s, s)
		}
		if s == "" {
			return nil, errors.New("is empty: write a duration such as 10s or 500ms")
		}
		return nil, fmt.Errorf("%q is not a duration: write e.g. 10s, 500ms or 1m30s", v)
	case int, int64, uint64, float64:
		if isZero(v) {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("%v has no unit: write e.g. %vs or %vms", v, v, v)
	}
	return nil, fmt.Errorf("want a duration such as 10s, got %s", describe(data))
}

func isZero(v any) bool {
	switch n := v.(type) {
	case int:
		return n == 0
	case int64:
		return n == 0
	case uint64:
		return n == 0
	case float64:
		return n == 0
	}
	return false
}

func toInt(data any, to reflect.Type) (any, error) {
	lo, hi := intRange(to)
	var n int64
	switch v := data.(type) {
	case int:
		n = int64(v)
	case int64:
		n = v
	case int32:
		n = int64(v)
	case uint64:
		if v > uint64(hi) {
			return nil, fmt.Errorf("%d is too large", v)
		}
		n = int64(v)
	case float64:
		if v != math.Trunc(v) || math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("%v is not a whole number", v)
		}
		if v < float64(lo) || v > float64(hi) {
			return nil, fmt.Errorf("%v is too large", v)
		}
		n = int64(v)
	case string:
		s := strings.TrimSpace(v)
		if s == "" {
			return nil, errors.New("is empty: write a whole number")
		}
		p, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return nil, fmt.Errorf("%q is too large", v)
			}
			return nil, fmt.Errorf("%q is not a whole number", v)
		}
		n = p
	default:
		return nil, fmt.Errorf("want a whole number, got %s", describe(data))
	}
	if n < lo || n > hi {
		return nil, fmt.Errorf("%d is too large", n)
	}
	return reflect.ValueOf(n).Convert(to).Interface(), nil
}

func intRange(t reflect.Type) (int64, int64) {
	bits := t.Bits()
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

func toBool(data any) (any, error) {
	switch v := data.(type) {
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", v)
		}
		return b, nil
	}
	return nil, fmt.Errorf("want true or false, got %s", describe(data))
}

// toString accepts strings only: YAML reads `password: 0123` as the number
// 83 (or 123) and `client_id: 1e3` as 1000, so converting a number back
// would silently change what was written. Quoting keeps it as written.
func toString(data any) (any, error) {
	if v, ok := data.(string); ok {
		return v, nil
	}
	switch data.(type) {
	case int, int64, uint64, float64, bool:
		return nil, fmt.Errorf("want a string, got %s: quote it ('...') so that YAML keeps it exactly as written", describe(data))
	}
	return nil, fmt.Errorf("want a string, got %s", describe(data))
}

// describe names a value's YAML shape without printing it: it may be a
// secret placed under the wrong key.
func describe(data any) string {
	switch data.(type) {
	case nil:
		return "nothing"
	case map[string]any, map[any]any:
		return "a mapping"
	case []any, []string:
		return "a list"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case int, int64, uint64, float64:
		return "a number"
	}
	return fmt.Sprintf("a %T", data)
}

// decodeErrors turns mapstructure's "decoding failed: 'kafka.partitions'
// ..." into one "kafka.partitions: ..." line per problem.
func decodeErrors(err error) error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		var de *mapstructure.DecodeError
		if errors.As(e, &de) && de == e {
			out = append(out, fmt.Errorf("%s: %w", de.Name(), de.Unwrap()))
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		default:
			out = append(out, e)
		}
	}
	walk(err)
	return errors.Join(out...)
}
