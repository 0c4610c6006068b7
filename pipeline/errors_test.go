package pipeline

import (
	"strings"
	"testing"

	"github.com/replicator/replicator/relation"
	"github.com/replicator/replicator/source"
)

// A change that cannot be encoded fails Handle with a message naming the
// table, the key (when it can be read) and the LSN; nothing is produced for
// it, not even the tombstone half of a key change, and it is never
// acknowledged.
func TestHandleRefusesChanges(t *testing.T) {
	t.Parallel()
	table := accountsTable()

	with := func(row []any, i int, v any) []any {
		row[i] = v
		return row
	}
	tests := []struct {
		name     string
		c        *source.Change
		wantText []string
	}{
		{
			name:     "delete without old tuple",
			c:        change(table, source.OpDelete, nil, nil),
			wantText: []string{"public.accounts", "REPLICA IDENTITY", testLSNText},
		},
		{
			name:     "null in a not null column",
			c:        change(table, source.OpInsert, with(accountRow(42, 1), colEmail, nil), nil),
			wantText: []string{"public.accounts", "key 42", testLSNText, `"email"`, "NULL"},
		},
		{
			name:     "unchanged toast value",
			c:        change(table, source.OpUpdate, with(accountRow(42, 2), colNote, relation.UnchangedTOAST{}), nil),
			wantText: []string{"public.accounts", "key 42", testLSNText, `"note"`, "TOAST"},
		},
		{
			name:     "unchanged toast value in a key change",
			c:        change(table, source.OpUpdate, with(accountRow(43, 2), colNote, relation.UnchangedTOAST{}), keyOnly(42)),
			wantText: []string{"public.accounts", "key 43", testLSNText, `"note"`, "TOAST"},
		},
		{
			name:     "value of the wrong Go type",
			c:        change(table, source.OpSnapshot, with(accountRow(42, 1), colVersion, int64(1)), nil),
			wantText: []string{"public.accounts", "key 42", testLSNText, `"version"`, "int64"},
		},
		{
			name:     "null key",
			c:        change(table, source.OpInsert, with(accountRow(42, 1), colID, nil), nil),
			wantText: []string{"public.accounts", testLSNText, `key column "id"`},
		},
		{
			// The new record encodes; the old key does not. Producing the
			// record alone would leave the old key alive in the topic.
			name:     "null old key in a key change",
			c:        change(table, source.OpUpdate, accountRow(42, 1), make([]any, numColumns)),
			wantText: []string{"public.accounts", testLSNText, `key column "id"`},
		},
		{
			name:     "null old key in a delete",
			c:        change(table, source.OpDelete, nil, make([]any, numColumns)),
			wantText: []string{"public.accounts", testLSNText, `key column "id"`},
		},
		{
			name:     "row of the wrong width",
			c:        change(table, source.OpInsert, accountRow(42, 1)[:3], nil),
			wantText: []string{"public.accounts", testLSNText, "3 values"},
		},
		{
			name:     "unknown op",
			c:        change(table, source.Op(99), accountRow(42, 1), nil),
			wantText: []string{"public.accounts", "op 99"},
		},
		{
			name: "snapshot row with an infinite timestamp",
			c: func() *source.Change {
				text := accountText(42, 1)
				text[colCreated] = []byte("infinity")
				return textChange(table, text)
			}(),
			wantText: []string{`snapshot read at LSN ` + testLSNText + `: table public.accounts key ("id")=(42) column "created" (timestamp with time zone)`,
				`parse timestamptz "infinity"`, "as_string:"},
		},
		{
			name: "snapshot row with a text that is no integer",
			c: func() *source.Change {
				text := accountText(42, 1)
				text[colVersion] = []byte("1.5")
				return textChange(table, text)
			}(),
			wantText: []string{`table public.accounts key ("id")=(42) column "version" (integer): parse int32 "1.5": invalid syntax`},
		},
		{
			name: "snapshot row with a NULL in a NOT NULL column",
			c: func() *source.Change {
				text := accountText(42, 1)
				text[colEmail] = nil
				return textChange(table, text)
			}(),
			wantText: []string{"encode value of public.accounts key 42 at LSN " + testLSNText, `column "email": NULL`},
		},
		{
			name: "unknown table index",
			c: func() *source.Change {
				c := change(table, source.OpInsert, accountRow(42, 1), nil)
				c.TableIndex = 1
				return c
			}(),
			wantText: []string{"table index 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeProducer{}
			p := New(newEntities(t, table, "accounts"), fake)
			var ack countAck
			err := p.handle(t.Context(), tt.c, &ack)
			if err == nil {
				t.Fatalf("handle: got no error, want one naming %q", tt.wantText)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error: got %q, want it to contain %q", err, w)
				}
			}
			if n := len(fake.produced()); n != 0 {
				t.Errorf("records produced: got %d, want 0", n)
			}
			if n := ack.count(); n != 0 {
				t.Errorf("acks: got %d, want 0", n)
			}
			// An encoding error is the caller's to handle; it does not
			// poison the producer side.
			if err := p.Err(); err != nil {
				t.Errorf("Err after an encoding error: got %v, want nil", err)
			}
		})
	}
}
