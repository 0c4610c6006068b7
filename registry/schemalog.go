package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// logFile is the schema log's name inside the data directory.
const logFile = "schemas.jsonl"

// logRecord is one line of the schema log: a registration that created a
// subject version. The embedded sr.Schema flattens into the line as schema,
// schemaType (omitted for Avro), references, metadata and ruleSet, the
// registry API's own field names.
type logRecord struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	sr.Schema
}

// subjectVersion identifies a registered version.
type subjectVersion struct {
	subject string
	version int
}

// Truncation describes a torn record cut from the end of the schema log at
// start-up. The registry answers a registration only after its line is
// fsynced, so a torn line is a registration nobody was told about: dropping
// it loses nothing acknowledged. Log it as a warning.
type Truncation struct {
	Path   string
	Line   int   // 1-based line number of the removed record
	Offset int64 // where it started, now the file's size
	Bytes  int   // bytes removed
	Reason string
}

func (t Truncation) String() string {
	return fmt.Sprintf("schema log %s: removed a torn record at line %d (%d bytes from offset %d: %s), left by a crash during a registration that was never acknowledged",
		t.Path, t.Line, t.Bytes, t.Offset, t.Reason)
}

// replayed is the outcome of reading the schema log.
type replayed struct {
	size      int64 // valid bytes; the file is truncated to this
	persisted map[subjectVersion]bool
	records   []logRecord // the distinct versions, in log order
	truncated *Truncation
}

// replayLog reads the whole log from f and registers every record into reg
// in order. A corrupt or unterminated last line is reported as a truncation
// for the caller to cut; a corrupt line followed by valid ones is an error,
// since dropping the lines after it would lose acknowledged schemas.
func replayLog(f *os.File, reg *srfake.Registry) (replayed, error) {
	out := replayed{persisted: make(map[subjectVersion]bool)}
	raw, err := io.ReadAll(f)
	if err != nil {
		return out, err
	}
	ids := make(map[int]bool)
	var off int64
	for line := 1; len(raw) > 0; line++ {
		i := bytes.IndexByte(raw, '\n')
		text, rest := raw, []byte(nil)
		if i >= 0 {
			text, rest = raw[:i], raw[i+1:]
		}
		torn := func(reason string) {
			out.truncated = &Truncation{Path: f.Name(), Line: line, Offset: off, Bytes: len(raw), Reason: reason}
		}
		if i < 0 {
			torn("no line end")
			break
		}
		if len(bytes.TrimSpace(text)) == 0 {
			off += int64(i + 1)
			raw = rest
			continue
		}
		var rec logRecord
		if err := decodeRecord(text, &rec); err != nil {
			if len(bytes.TrimSpace(rest)) == 0 {
				torn(err.Error())
				break
			}
			return out, fmt.Errorf("schema log %s line %d: %w; later lines are intact, so this is not a torn write: fix or remove the line", f.Name(), line, err)
		}
		dup, err := applyRecord(reg, rec, ids)
		if err != nil {
			return out, fmt.Errorf("schema log %s line %d (subject %q version %d id %d): %w", f.Name(), line, rec.Subject, rec.Version, rec.ID, err)
		}
		if !dup {
			out.persisted[subjectVersion{rec.Subject, rec.Version}] = true
			out.records = append(out.records, rec)
		}
		off += int64(i + 1)
		raw = rest
	}
	out.size = off
	return out, nil
}

// decodeRecord parses and sanity-checks one log line.
func decodeRecord(text []byte, rec *logRecord) error {
	if err := json.Unmarshal(text, rec); err != nil {
		return err
	}
	switch {
	case rec.Subject == "":
		return errors.New("record has no subject")
	case rec.Version <= 0:
		return fmt.Errorf("record has version %d", rec.Version)
	case rec.ID <= 0:
		return fmt.Errorf("record has id %d", rec.ID)
	case rec.Schema.Schema == "":
		return errors.New("record has no schema")
	}
	return nil
}

// applyRecord puts one logged registration back into reg under its logged
// subject, version and id. It reports dup for a record already applied.
//
// srfake.SeedSchema restores a version with its exact id, but panics if the
// id exists: a schema registered under a second subject shares its id with
// the first. Such a record is replayed through RegisterSchema, which reuses
// the id of an equal schema and appends the next version, and the result
// is checked against the log.
func applyRecord(reg *srfake.Registry, rec logRecord, ids map[int]bool) (dup bool, err error) {
	if have, ok := reg.GetSchema(rec.Subject, rec.Version); ok {
		if have.ID != rec.ID {
			return false, fmt.Errorf("an earlier line gave this version id %d", have.ID)
		}
		return true, nil
	}
	if ids[rec.ID] {
		id, version, err := reg.RegisterSchema(rec.Subject, rec.Schema)
		if err != nil {
			return false, err
		}
		if id != rec.ID || version != rec.Version {
			return false, fmt.Errorf("replays as version %d id %d: the log is out of order", version, id)
		}
		return false, nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	reg.SeedSchema(rec.Subject, rec.Version, rec.ID, rec.Schema)
	ids[rec.ID] = true
	return false, nil
}
