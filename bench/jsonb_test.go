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

// TestShapeStatements: the tables benchmark writes into its own tables,
// each transaction into the next.
func TestShapeStatements(t *testing.T) {
	if sql := wideInsertSQL(1, 2); strings.Count(sql, ", ") < wideColumns-1 {
		t.Errorf("wideInsertSQL has fewer than %d values:\n%s", wideColumns, sql)
	}
	if !strings.Contains(insertSQL(1, 2), "INSERT INTO "+tableName) {
		t.Errorf("insertSQL no longer starts with INSERT INTO %s: the tables benchmark would write the bench table", tableName)
	}
	if !strings.Contains(createTable, "CREATE TABLE "+tableName) {
		t.Errorf("createTable no longer starts with CREATE TABLE %s: the tables benchmark would create nothing", tableName)
	}
}
