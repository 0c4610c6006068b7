package main

import (
	"strings"
	"testing"
)

// TestJSONBInsertSQL: the large jsonb replaces insertSQL's small one (a
// change to insertSQL must not leave the jsonb benchmark writing small
// rows).
func TestJSONBInsertSQL(t *testing.T) {
	sql := jsonbInsertSQL(1, 2)
	if !strings.Contains(sql, "jsonb_agg(md5(") || strings.Contains(sql, "'seats'") {
		t.Errorf("jsonbInsertSQL does not write the large jsonb:\n%s", sql)
	}
}
