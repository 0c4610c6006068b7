package source

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// snapshot publishes every row of every table as seen by the exported
// snapshot, as OpSnapshot changes stamped with the consistent point, and
// waits until all are acknowledged. It uses its own connection: the
// replication connection must stay idle for the snapshot to stay valid.
func (s *Source) snapshot(ctx context.Context, snapshotName string, consistent pglogrepl.LSN, h Handler) (int64, error) {
	conn, err := Connect(ctx, s.cfg.URL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshotName)); err != nil {
		return 0, fmt.Errorf("import snapshot %s: %w", snapshotName, err)
	}

	cp := newCheckpoint(0)
	mark := cp.begin()
	started := time.Now().UTC()
	var total int64
	for i := range s.tables {
		n, err := s.snapshotTable(ctx, tx, i, consistent, started, cp, mark, h)
		total += n
		if err != nil {
			return total, err
		}
		s.log.Info("snapshot table read", "table", s.tables[i].QualifiedName(), "rows", n)
	}
	cp.seal(mark, consistent)
	if err := h.Flush(ctx); err != nil {
		return total, fmt.Errorf("wait for snapshot acknowledgements: %w", err)
	}
	if cp.advance() != consistent {
		return total, fmt.Errorf("snapshot: %d rows flushed but not acknowledged", mark.pending.Load())
	}
	return total, nil
}

func (s *Source) snapshotTable(ctx context.Context, tx pgx.Tx, idx int, consistent pglogrepl.LSN, at time.Time, cp *checkpoint, mark *txnMark, h Handler) (int64, error) {
	t := &s.tables[idx]
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	sql := "SELECT " + strings.Join(cols, ", ") + " FROM ONLY " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	// The simple protocol returns every column in text format: the same
	// bytes pgoutput sends, decoded by the same functions.
	rows, err := tx.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	var n int64
	ch := Change{Op: OpSnapshot, Table: t, TableIndex: idx, LSN: consistent, CommitTime: at}
	for rows.Next() {
		row, err := decodeRow(t, rows.RawValues())
		if err != nil {
			return n, fmt.Errorf("snapshot: %w", err)
		}
		ch.New = row
		ch.Ack = cp.track(mark)
		if err := h.Handle(ctx, &ch); err != nil {
			return n, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read %s: %w", t.QualifiedName(), err)
	}
	return n, nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
