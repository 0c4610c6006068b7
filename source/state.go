package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pglogrepl"
)

// snapshotState is what the source remembers between runs about the initial
// snapshot of its slot. It lives in a small JSON file under the data dir,
// written atomically (temp file + rename + fsync of the directory).
//
// A slot whose snapshot is not recorded as complete is never trusted: the
// stream from its consistent point would miss the rows that existed before
// it. On start such a slot is dropped and created again, and the snapshot
// redone from the new consistent point (records may repeat; at-least-once).
type snapshotState struct {
	Slot          string        `json:"slot"`
	ConsistentLSN pglogrepl.LSN `json:"consistent_lsn"`
	CreatedAt     time.Time     `json:"created_at"`
	Complete      bool          `json:"complete"`
	CompletedAt   time.Time     `json:"completed_at,omitzero"`
	Rows          int64         `json:"rows"`
	// Tables are the tables whose rows from before the slot are accounted
	// for (qualified names): read by the initial snapshot, or streamed
	// only by the operator's choice (source.snapshot: never). A table
	// configured later was never snapshotted: resuming would never
	// publish its older rows. Empty in state files written before it was
	// recorded, until the next resume fills it in (recordTables).
	Tables []string `json:"tables,omitempty"`
	// Republish are the republish jobs not finished yet, oldest first,
	// with each table's last acknowledged chunk (republish.go).
	Republish []republishJob `json:"republish,omitempty"`
	// RepublishDone are the ids of the latest finished or cancelled jobs:
	// a request the slot replays after a restart is not run again.
	RepublishDone []string `json:"republish_done,omitempty"`
	// RepublishFailed are the tables republish jobs could not republish
	// (republish.go, republishFailure), latest last.
	RepublishFailed []republishFailure `json:"republish_failed,omitempty"`
}

func statePath(dir, slot string) string {
	return filepath.Join(dir, "slot-"+slot+".json")
}

func readState(dir, slot string) (snapshotState, bool, error) {
	var s snapshotState
	b, err := os.ReadFile(statePath(dir, slot))
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("read snapshot state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, false, fmt.Errorf("parse snapshot state %s: %w", statePath(dir, slot), err)
	}
	return s, s.Slot == slot, nil
}

func writeState(dir string, s snapshotState) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode snapshot state: %w", err)
	}
	final := statePath(dir, s.Slot)
	tmp, err := os.CreateTemp(dir, ".slot-*.tmp")
	if err != nil {
		return fmt.Errorf("write snapshot state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write snapshot state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync snapshot state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write snapshot state: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("write snapshot state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}
