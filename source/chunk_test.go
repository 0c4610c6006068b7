package source

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/replicator/replicator/relation"
)

// TestSnapshotChunks covers how the snapshot reads tables: COPY's text
// format decoded exactly like the simple protocol's rows, key-ordered
// chunks, parallel workers.
func TestSnapshotChunks(t *testing.T) {
	t.Parallel()
	pg := startCluster(t)

	t.Run("COPY text decodes like the simple protocol", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "copy_text", `
			CREATE TYPE mood AS ENUM ('ok', 'tab	mood');
			CREATE TABLE odd (id int PRIMARY KEY, t text, arr text[], j jsonb, b bytea, n numeric(12,2),
				ts timestamptz, f float8, m mood, ia int[]);
			INSERT INTO odd VALUES
				(1, E'tab\there', '{"a\"b","c\\d",NULL,"e\tf","x y",""}', '{"k": "v\n\"q\\\\", "n": [1, null]}', '\x00ff5c09', -12.5,
					'1969-07-20 20:17:40.123456+00', 1.5e300, 'tab	mood', '{1,NULL,-3}'),
				(2, E'nl\nx\rcr\\N', '{}', '"\u00e9\ud83d\ude00"', '', 0, '-infinity', 'NaN', 'ok', NULL),
				(3, E'\\N', '{NULL}', 'null', NULL, NULL, NULL, '-0', NULL, '{}'),
				(4, '', NULL, '[]', '\x5c4e', 99999.99, '2024-02-29 00:00:00+00', 'Infinity', NULL, NULL),
				(5, E'\x01ctrl\x7f \b\f\v end\\', '{"\\\\N"}', '{"a\tb": "\\t"}', '\x', 1, NULL, 1e-300, NULL, NULL),
				(6, E'日本語😀 quote''s "dq" {brace}', '{"日本","😀"}', '{"😀": "日本"}', NULL, NULL, NULL, NULL, NULL, NULL),
				(7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);`)
		tbl := db.table("odd")
		ctx := context.Background()
		const sel = `SELECT id, t, arr, j, b, n, ts, f, m, ia FROM odd ORDER BY id`
		conn, err := Connect(ctx, db.dsn) // replicator's session settings
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, sel, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		var want [][][]byte
		for rows.Next() {
			var row [][]byte
			for _, v := range rows.RawValues() {
				if v == nil {
					row = append(row, nil)
				} else {
					row = append(row, bytes.Clone(v))
				}
			}
			want = append(want, row)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := conn.PgConn().CopyTo(ctx, &out, "COPY ("+sel+") TO STDOUT"); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != len(want) {
			t.Fatalf("COPY: got %d lines, want %d rows", len(lines), len(want))
		}
		var fields [][]byte
		var scratch []byte
		for r, line := range lines {
			fields, scratch, err = splitCopyLine([]byte(line), fields, scratch)
			if err != nil {
				t.Fatalf("row %d: %v", r+1, err)
			}
			if len(fields) != len(want[r]) {
				t.Fatalf("row %d: got %d fields, want %d", r+1, len(fields), len(want[r]))
			}
			for c := range fields {
				if (fields[c] == nil) != (want[r][c] == nil) || !bytes.Equal(fields[c], want[r][c]) {
					t.Errorf("row %d column %s: COPY gives %q (from %q), the simple protocol %q",
						r+1, tbl.Columns[c].Name, fields[c], line, want[r][c])
					continue
				}
				if fields[c] == nil {
					continue
				}
				got, gerr := relation.DecodeText(&tbl.Columns[c].Type, fields[c])
				exp, eerr := relation.DecodeText(&tbl.Columns[c].Type, want[r][c])
				if fmt.Sprint(gerr) != fmt.Sprint(eerr) || !reflect.DeepEqual(got, exp) && !(gerr == nil && fmt.Sprint(got) == fmt.Sprint(exp)) {
					t.Errorf("row %d column %s: decoded %v (%v), want %v (%v)", r+1, tbl.Columns[c].Name, got, gerr, exp, eerr)
				}
			}
		}
	})

	t.Run("memory is bounded: the reader waits for the handler", func(t *testing.T) {
		t.Parallel()
		// About 30 MB of COPY output: more than the socket buffers hold.
		db := newDB(t, pg, "bounded", `
			CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL);
			INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 150000) g;
			ANALYZE big;`)
		release := make(chan struct{})
		h := newFakeHandler(false)
		h.before = func(ctx context.Context, n int, _ *Change) error {
			if n == 0 { // a broker that does not take anything
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		dir, logs := t.TempDir(), &logBuffer{}
		r := run(t, db.newSource(dir, logs, func(c *Config) {
			c.ProgressInterval = 20 * time.Millisecond
			c.SnapshotChunkRows = 1_000_000
		}, "big"), h)
		// PostgreSQL blocks on a full socket once the reader stops reading.
		deadline := time.Now().Add(waitTimeout)
		for {
			var n int
			err := db.conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE datname = $1 AND wait_event = 'ClientWrite' AND query LIKE 'COPY %'`, db.name).Scan(&n)
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the snapshot's COPY never blocked on a full socket; log:\n%s", logs.String())
			}
			time.Sleep(10 * time.Millisecond) // polling pg_stat_activity
		}
		// Progress lines written from now on tell how much was read ahead.
		// PostgreSQL may wait on the socket for a moment before the reader
		// has handed its first batch over, so wait for a line that counts
		// some rows, then for five more lines: none may count more than
		// the bound while the handler stays blocked.
		seen := len(logs.String())
		line := regexp.MustCompile(`msg="snapshot progress" table=public.big rows=0 estimated_rows=150000 percent=0 rows_per_s=0 buffered_rows=([0-9]+)`)
		// The channel (2 per worker), the batch the emitter holds; the one
		// being filled is not counted yet.
		limit := (2*1 + 1) * batchRows
		buffered, lines := 0, 0
		for buffered == 0 || lines < 5 {
			if time.Now().After(deadline) {
				t.Fatalf("no progress line counting buffered rows (then five more); log:\n%s", logs.String())
			}
			time.Sleep(10 * time.Millisecond) // polling the log
			buffered, lines = 0, 0
			for _, m := range line.FindAllStringSubmatch(logs.String()[seen:], -1) {
				n, _ := strconv.Atoi(m[1])
				if n > limit {
					t.Fatalf("rows read ahead of a blocked handler: got %d, want at most %d (of 150000)", n, limit)
				}
				if buffered > 0 {
					lines++
				} else if n > 0 {
					buffered = n
				}
			}
		}
		t.Logf("%d rows read ahead of the blocked handler", buffered)
		close(release)
		db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		r.waitChanges(t, h, "every row", atLeast(150000))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
	})

	t.Run("key-ordered chunks on parallel workers", func(t *testing.T) {
		t.Parallel()
		db := newDB(t, pg, "chunks", `
			CREATE TABLE pairs (k text, n int, v int, PRIMARY KEY (k, n));
			INSERT INTO pairs SELECT E'k''\\' || (g % 7) || CASE WHEN g % 3 = 0 THEN '😀' ELSE '' END, g, g FROM generate_series(1, 1000) g;
			CREATE TABLE items (id bigint PRIMARY KEY, v text);
			INSERT INTO items SELECT g * 3, 'v' || g FROM generate_series(1, 2500) g;
			CREATE TABLE nokey (a int, b text);
			INSERT INTO nokey SELECT g, 'b' FROM generate_series(1, 300) g;
			CREATE TABLE empty (id int PRIMARY KEY);
			ANALYZE;`)
		dir := t.TempDir()
		logs, h := &logBuffer{}, newFakeHandler(false)
		src := db.newSource(dir, logs, func(c *Config) {
			c.SnapshotWorkers = 3
			c.SnapshotChunkRows = 100
		}, "pairs", "items", "nokey", "empty")
		r := run(t, src, h)
		st := db.waitState(dir, "complete", func(s snapshotState) bool { return s.Complete })
		got := r.waitChanges(t, h, "every snapshot row", atLeast(1000+2500+300))
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: got %v, want nil", err)
		}
		if len(got) != 3800 || st.Rows != 3800 {
			t.Errorf("changes: got %d (state %d rows), want 3800", len(got), st.Rows)
		}
		byTable := map[string][]string{}
		for _, c := range got {
			if c.Op != OpSnapshot || c.LSN != st.ConsistentLSN {
				t.Fatalf("change %s of %s at %s, want snapshot rows at %s", c.Op, c.Table.Name, c.LSN, st.ConsistentLSN)
			}
			var key string
			switch c.Table.Name {
			case "pairs":
				key = fmt.Sprintf("%s|%d", c.New[0], c.New[1])
			default:
				key = fmt.Sprint(c.New[0])
			}
			byTable[c.Table.Name] = append(byTable[c.Table.Name], key)
		}
		for _, tc := range []struct{ table, query string }{
			{"pairs", `SELECT k || '|' || n FROM pairs ORDER BY k, n`},
			{"items", `SELECT id::text FROM items ORDER BY items.id`},
		} {
			var want []string
			rows, err := db.conn.Query(context.Background(), tc.query)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				want = append(want, s)
			}
			if !slices.Equal(byTable[tc.table], want) {
				t.Errorf("%s: rows not emitted once each in key order: got %d rows, want %d; first got %v, first want %v",
					tc.table, len(byTable[tc.table]), len(want), byTable[tc.table][:min(5, len(byTable[tc.table]))], want[:5])
			}
		}
		nokey := slices.Clone(byTable["nokey"])
		slices.Sort(nokey)
		if len(slices.Compact(nokey)) != 300 {
			t.Errorf("nokey: got %d distinct rows, want 300", len(slices.Compact(nokey)))
		}
		log := logs.String()
		for _, want := range []string{
			"msg=\"initial snapshot started\" tables=4 workers=3 chunk_rows=100 estimated_rows=3800",
			"msg=\"snapshot table read\" table=public.pairs rows=1000 ",
			"msg=\"snapshot table read\" table=public.items rows=2500 ",
			"msg=\"snapshot table read\" table=public.nokey rows=300 ",
			"msg=\"snapshot table read\" table=public.empty rows=0 ",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
		}
	})
}

func TestUnescapeCopy(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{`plain`, "plain"},
		{`a\\b`, `a\b`},
		{`\b\f\n\r\t\v`, "\b\f\n\r\t\v"},
		{`\101\1\0127`, "A\x01\n7"},
		{`\x41\x4g\xZ`, "A\x04gxZ"},
		{`\N inside`, "N inside"},
		{`\.`, "."},
	} {
		got, err := unescapeCopy(nil, []byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("unescapeCopy(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := unescapeCopy(nil, []byte(`end\`)); err == nil {
		t.Error("unescapeCopy of a trailing backslash: got no error")
	}
	plain, _, err := splitCopyLine([]byte("a\t\tb\t"), nil, nil)
	if err != nil || len(plain) != 4 || string(plain[0]) != "a" || plain[1] == nil || len(plain[1]) != 0 || string(plain[2]) != "b" || plain[3] == nil || len(plain[3]) != 0 {
		t.Errorf("splitCopyLine without escapes: got %q, %v; want [a, \"\", b, \"\"] with empty strings, not NULLs", plain, err)
	}
	fields, _, err := splitCopyLine([]byte("1\t\\N\t\ta\\tb\t\\\\N"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{[]byte("1"), nil, {}, []byte("a\tb"), []byte(`\N`)}
	if len(fields) != len(want) {
		t.Fatalf("splitCopyLine: got %q, want %q", fields, want)
	}
	for i := range want {
		if (fields[i] == nil) != (want[i] == nil) || !bytes.Equal(fields[i], want[i]) {
			t.Errorf("field %d: got %q, want %q", i, fields[i], want[i])
		}
	}
}

// TestProgressLines checks what the snapshot logs when stderr is not a
// terminal, and the bar it draws when it is, at given moments (no clock).
func TestProgressLines(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	logs := &logBuffer{}
	p := newProgress([]string{"public.big", "public.fresh", "public.done", "public.queued"}, []int64{1000, -1, 10, 5},
		slog.New(slog.NewTextHandler(logs, nil)), nil)
	p.start(0, t0)
	p.queue(0, 1524)
	p.add(0, 500)
	p.start(1, t0)
	p.add(1, 40)
	p.start(2, t0)
	p.add(2, 10)
	p.finish(2, t0.Add(time.Second))
	p.report(t0.Add(2 * time.Second))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	want := []string{
		`msg="snapshot progress" table=public.big rows=500 estimated_rows=1000 percent=50 rows_per_s=250 eta=2s buffered_rows=1024`,
		`msg="snapshot progress" table=public.fresh rows=40 rows_per_s=20 buffered_rows=0`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d (tables in progress only):\n%s", len(lines), len(want), logs.String())
	}
	for i := range want {
		if !strings.HasSuffix(lines[i], want[i]) {
			t.Errorf("line %d: got %q, want it to end in %q", i, lines[i], want[i])
		}
	}

	// An estimate below the rows read (reltuples is stale) reads as 100 %.
	p.add(0, 700)
	logs.buf.Reset()
	p.report(t0.Add(4 * time.Second))
	if !strings.Contains(logs.String(), "table=public.big rows=1200 estimated_rows=1200 percent=100 rows_per_s=300 eta=0s buffered_rows=324") {
		t.Errorf("stale estimate: got %q", logs.String())
	}

	var bar bytes.Buffer
	b := newProgress([]string{"public.a", "public.b"}, []int64{1000, 1000}, slog.New(slog.DiscardHandler), &bar)
	b.start(0, t0)
	b.add(0, 1000)
	b.start(1, t0)
	b.add(1, 500)
	b.finish(0, t0.Add(time.Second))
	b.report(t0.Add(2 * time.Second))
	wantBar := "\r\x1b[Ksnapshot [##################......] 75% 1500/2000 rows, 250 rows/s, ETA 2s (public.b 50%)"
	if bar.String() != wantBar {
		t.Errorf("bar: got %q, want %q", bar.String(), wantBar)
	}
	b.close(t0.Add(2 * time.Second))
	if !strings.HasSuffix(bar.String(), "\n") {
		t.Errorf("bar after close: got %q, want a final newline", bar.String())
	}
}
