package main

import "strings"

// jsonbInsertSQL inserts the rows with keys lo..hi as insertSQL does, with
// about 50 KB of jsonb in attrs.
func jsonbInsertSQL(lo, hi int64) string {
	return strings.Replace(insertSQL(lo, hi),
		"jsonb_build_object('plan', 'pro', 'seats', g % 50, 'region', 'eu-west-' || g % 3)",
		"jsonb_build_object('plan', 'pro', 'blob', (SELECT jsonb_agg(md5(g::text || '.' || i)) FROM generate_series(1, 1400) i))", 1)
}
