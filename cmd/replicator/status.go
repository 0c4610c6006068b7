package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/sink"
	"github.com/replicator/replicator/source"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of status's thresholds.
const (
	defaultMaxRetainedWAL = 1 << 30   // 1 GiB kept by an inactive slot
	defaultMaxLagBytes    = 256 << 20 // 256 MiB behind the server
	// defaultMaxReadModelLag is in records, summed over a read model's
	// partitions.
	defaultMaxReadModelLag = 100000
	statusKafkaTimeout     = 10 * time.Second
	// statusSourceTimeout bounds reading the slot, connecting included:
	// a server that accepts the connection and never answers would
	// otherwise hold status (run from cron, a monitoring probe) forever.
	statusSourceTimeout = 10 * time.Second
)

// statusReport is what `replicator status` prints (and --json encodes).
type statusReport struct {
	// Slot is nil for a sink-only config (read_models, no source).
	Slot       *slotReport       `json:"slot,omitempty"`
	Snapshot   *snapshotReport   `json:"snapshot"`
	Topics     []topicReport     `json:"topics"`
	KafkaError string            `json:"kafka_error,omitempty"`
	ReadModels []readModelReport `json:"read_models"`
	// Attention lists what needs an operator; status exits non-zero when
	// it is not empty.
	Attention []string `json:"attention"`
}

type slotReport struct {
	Name         string `json:"name"`
	Exists       bool   `json:"exists"`
	Active       bool   `json:"active"`
	ActivePID    int    `json:"active_pid,omitempty"`
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	CurrentLSN   string `json:"current_wal_lsn,omitempty"`
	RetainedWAL  uint64 `json:"retained_wal_bytes"`
	LagBytes     uint64 `json:"lag_bytes"`
	WALStatus    string `json:"wal_status,omitempty"`
	SourceError  string `json:"error,omitempty"`
}

type snapshotReport struct {
	Complete      bool      `json:"complete"`
	ConsistentLSN string    `json:"consistent_lsn"`
	StartedAt     time.Time `json:"started_at"`
	CompletedAt   time.Time `json:"completed_at,omitzero"`
	Rows          int64     `json:"rows"`
	Tables        []string  `json:"tables,omitempty"`
	StateFile     string    `json:"state_file"`
	// Republish are the republish requests not finished yet.
	Republish []republishReport `json:"republish,omitempty"`
	// RepublishFailed are the tables republish requests could not
	// republish (until republished again or cleared by a cancel).
	RepublishFailed []republishFailureReport `json:"republish_failed,omitempty"`
}

type republishFailureReport struct {
	ID    string    `json:"id"`
	Table string    `json:"table"`
	At    time.Time `json:"at"`
	Error string    `json:"error"`
}

type republishReport struct {
	ID     string                 `json:"id"`
	Tables []republishTableReport `json:"tables"`
}

type republishTableReport struct {
	Table  string `json:"table"`
	Chunks int    `json:"chunks"`
	Rows   int64  `json:"rows"`
	Done   bool   `json:"done"`
}

type topicReport struct {
	Entity     string  `json:"entity"`
	Topic      string  `json:"topic"`
	EndOffsets []int64 `json:"end_offsets"` // by partition
	Records    int64   `json:"records"`     // sum of end offsets: records ever written
	Error      string  `json:"error,omitempty"`
}

// readModelReport is one read model's offsets stored in its store against
// its topics' end offsets.
type readModelReport struct {
	Name       string                 `json:"name"`
	Partitions []sink.PartitionStatus `json:"partitions"`
	Lag        int64                  `json:"lag_records"` // summed over the partitions
	// MissedTombstones says, per partition, why the read model may have
	// missed tombstones (rebuild it).
	MissedTombstones []string `json:"missed_tombstones,omitempty"`
	// Stopped is the error a sink process of the read model stopped with,
	// as recorded in its store; cleared by the next start of one.
	Stopped *stoppedReport `json:"stopped,omitempty"`
	Error   string         `json:"error,omitempty"`
	message string         // Stopped as the attention list says it
}

type stoppedReport struct {
	At    time.Time `json:"at"`
	Error string    `json:"error"`
}

// readModelStatus reads each read model's stored offsets (kept by the sink
// in its store with the rows) and compares them with its topics' end
// offsets. What cannot be read is reported per read model.
func readModelStatus(ctx context.Context, cfg *config.Config) []readModelReport {
	out := []readModelReport{}
	if len(cfg.ReadModels) == 0 {
		return out
	}
	fail := func(err error) []readModelReport {
		for _, m := range cfg.ReadModels {
			out = append(out, readModelReport{Name: m.Name, Partitions: []sink.PartitionStatus{}, Error: err.Error()})
		}
		return out
	}
	brokers, _ := sinkEndpoints(cfg)
	opts, err := kafkaOptions(cfg, brokers, nil)
	if err != nil {
		return fail(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fail(fmt.Errorf("kafka client: %w", err))
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, m := range cfg.ReadModels {
		mctx, cancel := context.WithTimeout(ctx, statusKafkaTimeout)
		st, err := sink.ReadStatus(mctx, sinkModel(m), m.Store, adm, time.Now())
		cancel()
		r := readModelReport{Name: m.Name, Partitions: st.Partitions, Lag: st.Lag}
		if r.Partitions == nil {
			r.Partitions = []sink.PartitionStatus{}
		}
		for _, l := range st.Missed {
			r.MissedTombstones = append(r.MissedTombstones, l.String())
		}
		if st.Stopped != nil {
			r.Stopped = &stoppedReport{At: st.Stopped.At, Error: st.Stopped.Error}
			r.message = st.Stopped.Message(m.Name)
		}
		if err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out
}

func newStatusCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the slot, snapshot state and topics without touching the running replicator; exit 1 if something needs attention",
		Long: `status reads, without touching a running replicator: the replication slot
from pg_replication_slots (active, confirmed LSN, retained WAL, lag), the
snapshot state in data_dir, the end offsets of the entity topics, and each read
model's offsets stored in its store against its topics' end offsets. It exits
with status 1 when something needs attention: the slot is missing after a
completed snapshot, its WAL is lost, it is inactive while keeping more WAL than
--max-retained-wal-bytes, or it is more than --max-lag-bytes behind; or no
broker of kafka.brokers answers (the embedded broker answers only while
replicator run is up, and is not a problem when it does not); or a read
model is more than --max-read-model-lag records behind, may have missed
tombstones, stopped with an error (recorded in its store by the sink), or
cannot be read; or a republish request could not republish a
table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n, _ := cmd.Flags().GetInt64("max-read-model-lag"); n < 0 {
				return fmt.Errorf("--max-read-model-lag: %d is negative: give a number of records, 0 or more (default %d)", n, defaultMaxReadModelLag)
			}
			path, _ := cmd.Flags().GetString("config")
			// A sink-only file (kafka, registry, read_models): its read
			// models are reported, as `replicator sink` reads it.
			cfg, sinkOnly, err := config.LoadAny(path, cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			maxRetained, _ := cmd.Flags().GetUint64("max-retained-wal-bytes")
			maxLag, _ := cmd.Flags().GetUint64("max-lag-bytes")
			maxModelLag, _ := cmd.Flags().GetInt64("max-read-model-lag")
			rep := collectStatus(cmd.Context(), cfg, sinkOnly, maxRetained, maxLag, maxModelLag)
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := printStatus(stdout, rep); err != nil {
				return err
			}
			if len(rep.Attention) > 0 {
				return exitError{msg: "status: needs attention"}
			}
			return nil
		},
	}
	cmd.Flags().Bool("json", false, "print JSON instead of a table")
	cmd.Flags().Uint64("max-retained-wal-bytes", defaultMaxRetainedWAL, "an inactive slot keeping more WAL than this needs attention")
	cmd.Flags().Uint64("max-lag-bytes", defaultMaxLagBytes, "a slot whose confirmed LSN is more than this behind the server's WAL needs attention")
	cmd.Flags().Int64("max-read-model-lag", defaultMaxReadModelLag, "a read model more than this many records behind its topics needs attention")
	return cmd
}

// collectStatus gathers the report; what cannot be read is reported in it,
// not returned, so the rest is still shown. sinkOnly (a config of read
// models alone) reports the read models only.
func collectStatus(ctx context.Context, cfg *config.Config, sinkOnly bool, maxRetained, maxLag uint64, maxReadModelLag int64) statusReport {
	rep := statusReport{Topics: []topicReport{}, ReadModels: []readModelReport{}, Attention: []string{}}
	attention := func(format string, a ...any) { rep.Attention = append(rep.Attention, fmt.Sprintf(format, a...)) }
	if !sinkOnly {
		rep.Slot = &slotReport{Name: cfg.Source.Slot}
		collectSourceStatus(ctx, cfg, &rep, attention, maxRetained, maxLag)
	}
	rep.ReadModels = readModelStatus(ctx, cfg)
	for _, m := range rep.ReadModels {
		if m.Stopped != nil {
			attention("%s", m.message)
		}
		switch {
		case m.Error != "":
			attention("read model %s: %s", m.Name, m.Error)
		case m.Stopped != nil: // its lag says nothing more
		case m.Lag > maxReadModelLag:
			attention("read model %s is %d records behind its topics (over --max-read-model-lag %d): is `replicator sink` running?", m.Name, m.Lag, maxReadModelLag)
		}
		for _, why := range m.MissedTombstones {
			attention("%s", why)
		}
	}
	return rep
}

// collectSourceStatus adds the source side to rep: the snapshot state and
// republish requests, the slot, the entity topics' end offsets.
func collectSourceStatus(ctx context.Context, cfg *config.Config, rep *statusReport, attention func(string, ...any), maxRetained, maxLag uint64) {

	state, haveState, err := source.ReadSnapshotState(filepath.Join(cfg.DataDir, "source"), cfg.Source.Slot)
	switch {
	case err != nil:
		attention("snapshot state: %v", err)
	case haveState:
		rep.Snapshot = &snapshotReport{
			Complete: state.Complete, ConsistentLSN: state.ConsistentLSN.String(), StartedAt: state.CreatedAt,
			CompletedAt: state.CompletedAt, Rows: state.Rows, Tables: state.Tables, StateFile: state.Path,
		}
		for _, j := range state.Republish {
			r := republishReport{ID: j.ID}
			for _, t := range j.Tables {
				r.Tables = append(r.Tables, republishTableReport{Table: t.Name, Chunks: t.Chunks, Rows: t.Rows, Done: t.Done})
			}
			rep.Snapshot.Republish = append(rep.Snapshot.Republish, r)
		}
		for _, f := range state.RepublishFailed {
			rep.Snapshot.RepublishFailed = append(rep.Snapshot.RepublishFailed, republishFailureReport{ID: f.ID, Table: f.Table, At: f.At, Error: f.Reason})
			attention("%v", f)
		}
	}

	slot, err := readSlot(ctx, cfg)
	if err != nil {
		rep.Slot.SourceError = err.Error()
		attention("source %s: %v", config.KeySourceURL, err)
	} else {
		rep.Slot = &slotReport{
			Name: slot.Name, Exists: slot.Exists, Active: slot.Active, ActivePID: slot.ActivePID,
			RetainedWAL: slot.RetainedBytes(), LagBytes: slot.LagBytes(), WALStatus: slot.WALStatus,
		}
		if slot.Exists {
			rep.Slot.ConfirmedLSN, rep.Slot.CurrentLSN = slot.ConfirmedLSN.String(), slot.CurrentLSN.String()
		}
		switch {
		case !slot.Exists && haveState && state.Complete:
			attention("replication slot %s is gone although its snapshot completed (dropped, or lost in a failover): the next start refuses to run, since rows deleted while it was missing would stay on the topics; to accept that, delete %s (a new slot and snapshot), or start the entities over on new topics (docs/OPERATIONS.md, When it stops by itself)",
				slot.Name, filepath.Join(cfg.DataDir, "source", "slot-"+slot.Name+".json"))
		case slot.WALStatus == "lost":
			attention("replication slot %s has lost WAL it needed (wal_status lost): it cannot stream any more; drop it (SELECT pg_drop_replication_slot('%s')) and delete %s so the next start takes a new snapshot", slot.Name, slot.Name, filepath.Join(cfg.DataDir, "source", "slot-"+slot.Name+".json"))
		case slot.Exists && !slot.Active && slot.RetainedBytes() > maxRetained:
			attention("replication slot %s is inactive and keeps %s of WAL on the server (over --max-retained-wal-bytes %s): start replicator, or drop the slot if it is abandoned, before the disk fills", slot.Name, bytesText(slot.RetainedBytes()), bytesText(maxRetained))
		}
		if slot.Exists && slot.LagBytes() > maxLag {
			attention("replication slot %s is %s behind the server's WAL (over --max-lag-bytes %s)", slot.Name, bytesText(slot.LagBytes()), bytesText(maxLag))
		}
	}

	rep.Topics, err = topicEnds(ctx, cfg)
	if err != nil {
		rep.KafkaError = err.Error()
		// The embedded broker only runs inside `replicator run`: not
		// answering is no problem by itself. The brokers of kafka.brokers
		// are what run produces to: none answering is one.
		if !cfg.EmbeddedKafka() {
			attention("entity topics: %v", err)
		}
	}
}

func readSlot(ctx context.Context, cfg *config.Config) (source.SlotStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, statusSourceTimeout)
	defer cancel()
	conn, err := source.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return source.SlotStatus{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return source.ReadSlotStatus(ctx, conn, cfg.Source.Slot)
}

// topicEnds lists the end offsets of every entity topic, from the
// configured brokers or the embedded broker's address (reachable only
// while `replicator run` is up).
func topicEnds(ctx context.Context, cfg *config.Config) ([]topicReport, error) {
	out := []topicReport{}
	brokers := cfg.Kafka.Brokers
	if cfg.EmbeddedKafka() {
		brokers = []string{cfg.Kafka.Listen}
	}
	opts, err := kafkaOptions(cfg, brokers, nil)
	if err != nil {
		return out, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return out, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	kctx, cancel := context.WithTimeout(ctx, statusKafkaTimeout)
	defer cancel()
	if err := cl.Ping(kctx); err != nil {
		if cfg.EmbeddedKafka() {
			return out, fmt.Errorf("the embedded broker at %s (%s) does not answer: it runs only inside `replicator run`", cfg.Kafka.Listen, config.KeyKafkaListen)
		}
		return out, fmt.Errorf("no broker of %s %v answers: %w", config.KeyKafkaBrokers, brokers, err)
	}
	names := make([]string, len(cfg.Entities))
	for i, e := range cfg.Entities {
		names[i] = e.Topic
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(kctx, names...)
	if err != nil {
		return out, fmt.Errorf("list end offsets: %w", err)
	}
	for _, e := range cfg.Entities {
		tr := topicReport{Entity: e.Name, Topic: e.Topic, EndOffsets: []int64{}}
		parts := ends[e.Topic]
		// kadm reports a topic it could not list (missing, not
		// authorized) as one entry for partition -1 with the error.
		if o, ok := parts[-1]; ok && o.Err != nil {
			tr.Error = o.Err.Error()
			if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
				tr.Error = "topic does not exist"
			}
			out = append(out, tr)
			continue
		}
		for _, p := range slices.Sorted(maps.Keys(parts)) {
			o := parts[p]
			if o.Err != nil {
				tr.Error = o.Err.Error()
				continue
			}
			tr.EndOffsets = append(tr.EndOffsets, o.Offset)
			tr.Records += o.Offset
		}
		if len(parts) == 0 && tr.Error == "" {
			tr.Error = "topic does not exist"
		}
		out = append(out, tr)
	}
	return out, nil
}

func printStatus(w io.Writer, rep statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if rep.Slot != nil {
		printSourceStatus(tw, rep)
	}
	printReadModelStatus(tw, rep)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Attention) == 0 {
		_, err := fmt.Fprintln(w, "ok: nothing needs attention")
		return err
	}
	var b strings.Builder
	b.WriteString("needs attention:\n")
	for _, a := range rep.Attention {
		fmt.Fprintf(&b, "  - %s\n", a)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// printSourceStatus prints the slot, the snapshot and republish requests,
// and the entity topics.
func printSourceStatus(tw io.Writer, rep statusReport) {
	s := rep.Slot
	switch {
	case s.SourceError != "":
		fmt.Fprintf(tw, "slot\t%s\tunknown: %s\n", s.Name, s.SourceError)
	case !s.Exists:
		fmt.Fprintf(tw, "slot\t%s\tdoes not exist\n", s.Name)
	default:
		state := "inactive (no replicator streams from it)"
		if s.Active {
			state = fmt.Sprintf("active (walsender pid %d)", s.ActivePID)
		}
		fmt.Fprintf(tw, "slot\t%s\t%s\n", s.Name, state)
		fmt.Fprintf(tw, "\tconfirmed LSN\t%s (server WAL at %s)\n", s.ConfirmedLSN, s.CurrentLSN)
		fmt.Fprintf(tw, "\tlag\t%s\n", bytesText(s.LagBytes))
		fmt.Fprintf(tw, "\tretained WAL\t%s\n", bytesText(s.RetainedWAL))
		if s.WALStatus != "" {
			fmt.Fprintf(tw, "\twal_status\t%s\n", s.WALStatus)
		}
	}
	if sn := rep.Snapshot; sn == nil {
		fmt.Fprintf(tw, "snapshot\tnone recorded in data_dir\t\n")
	} else if sn.Complete {
		fmt.Fprintf(tw, "snapshot\tcomplete\t%s, %d rows, consistent point %s\n", sn.CompletedAt.Format(time.RFC3339), sn.Rows, sn.ConsistentLSN)
	} else {
		fmt.Fprintf(tw, "snapshot\tincomplete\tstarted %s at %s: the next start redoes it\n", sn.StartedAt.Format(time.RFC3339), sn.ConsistentLSN)
	}
	if sn := rep.Snapshot; sn != nil {
		for _, r := range sn.Republish {
			for _, t := range r.Tables {
				what := fmt.Sprintf("%d rows in %d chunks so far", t.Rows, t.Chunks)
				if t.Done {
					what = fmt.Sprintf("%d rows, done", t.Rows)
				}
				fmt.Fprintf(tw, "republish\t%s\t%s: %s\n", r.ID, t.Table, what)
			}
		}
		for _, f := range sn.RepublishFailed {
			fmt.Fprintf(tw, "republish\t%s\t%s: failed %s\n", f.ID, f.Table, f.At.Format(time.RFC3339))
		}
	}
	if rep.KafkaError != "" {
		fmt.Fprintf(tw, "topics\tunknown\t%s\n", rep.KafkaError)
	}
	for _, t := range rep.Topics {
		if t.Error != "" {
			fmt.Fprintf(tw, "topic\t%s\t%s\n", t.Topic, t.Error)
			continue
		}
		fmt.Fprintf(tw, "topic\t%s\t%d records written, end offsets %v\n", t.Topic, t.Records, t.EndOffsets)
	}
}

// printReadModelStatus prints each read model's position.
func printReadModelStatus(tw io.Writer, rep statusReport) {
	if len(rep.ReadModels) == 0 {
		fmt.Fprintf(tw, "read models\tnone configured\t\n")
	}
	for _, m := range rep.ReadModels {
		if m.Error != "" {
			fmt.Fprintf(tw, "read model\t%s\tunknown: %s\n", m.Name, m.Error)
			continue
		}
		state := ""
		if m.Stopped != nil {
			state = ", stopped at " + m.Stopped.At.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "read model\t%s\t%d records behind%s\n", m.Name, m.Lag, state)
		for _, p := range m.Partitions {
			stored := "none stored"
			if p.Stored >= 0 {
				stored = fmt.Sprintf("stored %d", p.Stored)
			}
			fmt.Fprintf(tw, "\t%s[%d]\t%s, end %d, %d behind\n", p.Topic, p.Partition, stored, p.End, p.Lag)
		}
	}
}

// bytesText prints a byte count for people.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
