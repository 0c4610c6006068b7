package sink

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/replicator/replicator/cdc"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxTransientAttempts bounds a rebuild's attempts at its swap when it
// meets a running batch's locks.
const maxTransientAttempts = 10

// Config is one read model's sink. Model and StoreURL and Kafka and
// Registry are required.
type Config struct {
	Model ReadModel
	// StoreURL is the read-model database (see [openStore] for the forms).
	StoreURL string
	// Kafka are the connection options (brokers, TLS, SASL); the sink adds
	// its consumer-group options.
	Kafka []kgo.Opt
	// Registry resolves schema ids (a *sr.Client).
	Registry schemaRegistry
	// Logger; default slog.Default().
	Logger *slog.Logger
	// RebuildGCPercent is Go's GC target (debug.SetGCPercent) while a
	// rebuild runs, restored when it ends; 0 leaves it alone. A rebuild's
	// live heap is bounded by two batches, so a higher target trades a
	// bounded amount of memory for less collection (about a sixth of its
	// CPU at 300).
	RebuildGCPercent int
	// Group is the consumer group; default replicator-sink-<name>.
	Group string
	// MaxBatch bounds the records of one poll, hence of one transaction;
	// default 10000. A rebuild holds two batches: the one it writes and
	// the next, decoded meanwhile.
	MaxBatch int
	// Observer, if set, is told each committed batch's apply time and
	// each written record's commit → visible time (the metrics'
	// histograms). A rebuild has none.
	Observer BatchObserver
	// GiveUpAfter bounds how long a batch is retried while the store or the
	// registry is unavailable before the read model stops; 0 (default):
	// retried until they are back.
	GiveUpAfter time.Duration
	// StoreName is the store as logs show it (its URL without password);
	// default the URL's scheme.
	StoreName string

	// beforeSwapCommit, when set (tests), runs in a rebuild's swap after
	// the rebuild lock was checked and just before the transaction that
	// decides the swap commits (MySQL: its first step's).
	beforeSwapCommit func(context.Context)
	// rebuildLockCheckEvery, when set (tests), replaces
	// rebuildLockCheckInterval.
	rebuildLockCheckEvery time.Duration
}

// BatchObserver is told of each batch committed in the store: how many
// records and how long decoding, writing and committing took; and, for
// each record it wrote (not those dead-lettered) that carries a
// commit_ts header, how long after that commit in the source the batch
// committed: commit → visible, which a record count (the lag in records)
// does not tell. Called on the poll loop: it must be cheap.
type BatchObserver interface {
	ObserveBatch(records int, took time.Duration)
	ObserveVisible(sinceCommit time.Duration)
}

// State is where a read model's sink is in its life.
type State int32

const (
	StateStarting State = iota // preparing the store, reading the schemas
	StateRunning               // consuming: the group is joined in the background (kgo), so from before the join
	StateFailed                // stopped with an error
	StateStopped               // stopped cleanly
)

func (s State) String() string {
	switch s {
	case StateRunning:
		return "running"
	case StateFailed:
		return "failed"
	case StateStopped:
		return "stopped"
	}
	return "starting"
}

// PartitionProgress is one assigned partition: Next is the offset stored
// with the rows (the next to apply; -1 none stored yet), End the
// partition's high watermark as of its last fetch (-1 not fetched yet).
type PartitionProgress struct {
	Topic     string
	Partition int32
	Next, End int64
}

// Lag is End minus Next (a partition with nothing stored counts from 0);
// 0 while End is unknown.
func (p PartitionProgress) Lag() int64 {
	if p.End < 0 {
		return 0
	}
	return max(0, p.End-max(p.Next, 0))
}

// Stats are a read model's counters since start (for tests and, later,
// metrics).
type Stats struct {
	// Batches counts polls whose records were committed: one per batch,
	// however many transactions it took (a batch split record by record
	// counts once, and in Split).
	Batches      int64
	Records      int64 // records consumed and applied (or dead-lettered)
	DeadLettered int64 // records sent to the dead-letter topic
	Fenced       int64 // batches rolled back because the stored offsets moved
	Split        int64 // batches the store rejected, applied again record by record to find the culprit
	Retries      int64 // attempts at a batch that failed because the store or the registry was unavailable
}

// Sink builds one read model. Build with [New], run with [Sink.Run]. Its
// methods other than Stats are not safe for concurrent use.
type Sink struct {
	cfg  Config
	name string // the read model as the user named it (a rebuild's shadow model is named after it), for messages
	log  *slog.Logger
	api  avro.API

	st *store
	a  *applier
	cl *kgo.Client

	// likeTable is, for a rebuild, the live table its table is created
	// from when it exists (createShadow); "" for a sink.
	likeTable string

	mu       sync.Mutex   // protects expected, ends and listed (written by group callbacks and the poll loop, read by metrics)
	expected map[tp]int64 // assigned partitions → stored next offset, -1 none
	ends     map[tp]int64 // assigned partitions → end at the last fetch, or listed while a batch takes long (watchEnds)
	listed   bool         // ends were listed since the last fetch was noted (noteEnds then only raises)

	// batchSince is when the batch in progress began (Unix nanoseconds),
	// 0 between batches: watchEnds lists the topics' ends while it is old.
	batchSince atomic.Int64

	state atomic.Int32 // a State

	batches, records, deadLettered, fenced, split, retries atomic.Int64

	// dlqSent are the records of the batch being applied already produced
	// to the dead-letter topic: an attempt that then fails for a passing
	// cause rolls back its rows, not its dead letters, and the next
	// attempt must not send them again. Reset per batch (processRetrying);
	// the batch's goroutine only.
	dlqSent map[tpo]struct{}

	// suspect is set by processRetrying once the batch has ended the
	// store's connection suspectAfter times in a row while the store
	// answered at once: a connection the batch's own statements end
	// (a trigger or extension that terminates its backend, a proxy that
	// drops it) is then the batch's fault, split to find the record.
	// The batch's goroutine only.
	suspect bool

	// groupPending are the offsets committed in the store and not yet
	// to the group, groupAt the last commit to the group (commitGroup);
	// the poll loop's goroutine only.
	groupPending map[string]map[int32]kgo.EpochOffset
	groupAt      time.Time

	// aheadSize is the size to allocate for the next batch's COPY lines
	// written with its decoding ahead (the last one's, and some): its
	// buffer grows once.
	aheadSize atomic.Int64

	// commitRaw is the last commit_ts header parsed by committed, and
	// commitAt its time; the poll loop's goroutine only.
	commitRaw []byte
	commitAt  time.Time

	// lagAt is when the poll loop last checked for missed tombstones
	// (reportLag).
	lagAt time.Time
}

// tpo is a record's position.
type tpo struct {
	tp
	offset int64
}

// New validates cfg, the read model's names against the store's limits
// included (a rebuild's suffixed names too). It connects to nothing and
// starts no goroutine.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Model.validate(); err != nil {
		return nil, err
	}
	if cfg.StoreURL == "" || cfg.Registry == nil || len(cfg.Kafka) == 0 {
		return nil, fmt.Errorf("read model %s: store URL, Kafka options and registry are required", cfg.Model.Name)
	}
	d, err := dialectOf(cfg.StoreURL)
	if err != nil {
		return nil, fmt.Errorf("read model %s: store: %w", cfg.Model.Name, err)
	}
	if err := cfg.Model.checkNames(d); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Group == "" {
		cfg.Group = "replicator-sink-" + cfg.Model.Name
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 10000
	}
	if cfg.GiveUpAfter < 0 {
		return nil, fmt.Errorf("read model %s: give up after %s is negative (0: retry until the store and registry are back)", cfg.Model.Name, cfg.GiveUpAfter)
	}
	if cfg.StoreName == "" {
		// The scheme only: the URL may hold a password.
		if u, err := url.Parse(cfg.StoreURL); err == nil {
			cfg.StoreName = u.Scheme
		}
	}
	return &Sink{
		cfg:      cfg,
		name:     cfg.Model.Name,
		log:      cfg.Logger.With("read_model", cfg.Model.Name),
		api:      newAPI(),
		expected: map[tp]int64{},
		ends:     map[tp]int64{},
	}, nil
}

// Name is the read model's name.
func (s *Sink) Name() string { return s.cfg.Model.Name }

// State is where the sink is. Safe for concurrent use.
func (s *Sink) State() State { return State(s.state.Load()) }

// Partitions reports the assigned partitions' stored and end offsets.
// Safe for concurrent use.
func (s *Sink) Partitions() []PartitionProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PartitionProgress, 0, len(s.expected))
	for k, next := range s.expected {
		end, ok := s.ends[k]
		if !ok {
			end = -1
		}
		out = append(out, PartitionProgress{Topic: k.topic, Partition: k.part, Next: next, End: end})
	}
	return out
}

// Stats returns the counters. Safe for concurrent use.
func (s *Sink) Stats() Stats {
	return Stats{Batches: s.batches.Load(), Records: s.records.Load(), DeadLettered: s.deadLettered.Load(), Fenced: s.fenced.Load(), Split: s.split.Load(), Retries: s.retries.Load()}
}

// Run prepares the store (the sink's tables, the read-model table), joins
// the consumer group and applies batches until ctx ends (nil: a clean stop
// after the batch in progress, or while starting) or the read model fails.
// A failure is recorded in the store (failuresTable) for `replicator
// status`, best effort; a successful start clears it.
func (s *Sink) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// A stop while starting (the store's tables checked, the
			// schemas read) cuts that work short: a stop, not a failure.
			err = nil
		}
		if err != nil {
			s.state.Store(int32(StateFailed))
			s.recordStop(ctx, err)
		} else {
			s.state.Store(int32(StateStopped))
		}
	}()
	if err := s.prepare(ctx); err != nil {
		return err
	}
	defer s.st.db.Close()
	topics := make([]string, len(s.cfg.Model.Sources))
	for i, src := range s.cfg.Model.Sources {
		topics[i] = src.Topic
	}
	opts := append([]kgo.Opt{}, s.cfg.Kafka...)
	opts = append(opts,
		kgo.ConsumerGroup(s.cfg.Group),
		// A process that dies without leaving (SIGKILL, a lost machine)
		// holds its partitions until its session times out: 10 s instead
		// of kgo's 45 s lets the others take over sooner.
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		// A rebalance waits this long for members to rejoin, dead ones
		// included: a process killed after it joined holds up each
		// rebalance it is part of this long. At the session timeout
		// instead of 30 s, five processes killed in turn were taken over
		// in 17–36 s instead of about 56 s (kfake, measured); a batch (at
		// most MaxBatch records) still finishes well within, and one that
		// does not (a store outage) is fenced by the stored offsets.
		kgo.RebalanceTimeout(10*time.Second),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		// A batch finishes (and its offsets commit in the store) before
		// its partitions may move to another process.
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {}),
		kgo.AdjustFetchOffsetsFn(s.adjust),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, parts map[string][]int32) {
			s.drop(ctx, cl, parts, "revoked")
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, parts map[string][]int32) {
			s.drop(ctx, cl, parts, "lost")
		}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("read model %s: kafka client: %w", s.name, err)
	}
	s.cl = cl
	defer cl.Close() // leaves the group: the partitions move at once
	defer func() {
		// The group's offsets catch up with the store before leaving
		// (lag tools), bounded: they are for monitoring only.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.commitGroup(cctx, true)
	}()
	if s.cfg.Model.OnError == DeadLetter {
		if err := s.ensureDeadLetterTopic(ctx); err != nil {
			return err
		}
	}
	s.reportLag(ctx, topics)
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.watchEnds(wctx, kadm.NewClient(cl), topics)
	}()
	defer func() { stopWatch(); <-watched }()
	s.state.Store(int32(StateRunning))
	for {
		if time.Since(s.lagAt) >= lagCheckInterval {
			s.reportLag(ctx, topics)
		}
		fetches := cl.PollRecords(ctx, s.cfg.MaxBatch)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("fetch failed; retrying", "topic", t, "partition", p, "error", err)
			}
		})
		s.noteEnds(fetches)
		start := time.Now()
		before := s.records.Load()
		s.batchSince.Store(start.UnixNano())
		err := s.processRetrying(ctx, &decodedBatch{recs: fetches.Records()})
		s.batchSince.Store(0)
		cl.AllowRebalance()
		if err != nil {
			return fmt.Errorf("read model %s: %w", s.name, err)
		}
		if n := s.records.Load() - before; n > 0 && s.cfg.Observer != nil {
			s.cfg.Observer.ObserveBatch(int(n), time.Since(start))
		}
	}
}

// noteEnds keeps each fetched partition's high watermark: the lag the
// metrics show is measured against it, at no cost of a request. After a
// batch during which watchEnds listed the ends, the fetches kgo buffered
// meanwhile are older than those: they only raise the ends (taking theirs
// would show too little lag, none with records unapplied, until the next
// fetch). Otherwise a fetch's end is taken as it is, lower too (a log cut
// back by an unclean leader election would else show lag forever).
func (s *Sink) noteEnds(fetches kgo.Fetches) {
	s.mu.Lock()
	defer s.mu.Unlock()
	raiseOnly := s.listed
	s.listed = false
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		k := tp{p.Topic, p.Partition}
		if _, assigned := s.expected[k]; !assigned || p.Err != nil {
			return
		}
		if end, ok := s.ends[k]; !ok || !raiseOnly || p.HighWatermark > end {
			s.ends[k] = p.HighWatermark
		}
	})
}

// endsRefresh is how often watchEnds lists the topics' ends while a batch
// has held the poll loop for at least as long (so 2–4 s into a batch, then
// every 2 s).
const endsRefresh = 2 * time.Second

// watchEnds keeps the lag true while a batch holds the poll loop (the
// store down or locked, a long batch): the ends the fetches carry stop
// moving then, and records produced meanwhile would not count as lag, the
// moment lag matters most. Between batches the fetches' ends are current
// and nothing is asked.
func (s *Sink) watchEnds(ctx context.Context, adm *kadm.Client, topics []string) {
	t := time.NewTicker(endsRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		since := s.batchSince.Load()
		if since == 0 || time.Since(time.Unix(0, since)) < endsRefresh {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, endsRefresh)
		listed, err := adm.ListEndOffsets(lctx, topics...)
		cancel()
		if err != nil {
			// Monitoring only: the next tick tries again.
			continue
		}
		s.raiseEnds(listed)
	}
}

// raiseEnds takes the listed ends of the assigned partitions that are
// ahead of the ends known.
func (s *Sink) raiseEnds(listed kadm.ListedOffsets) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listed = true
	listed.Each(func(o kadm.ListedOffset) {
		k := tp{o.Topic, o.Partition}
		if _, ok := s.expected[k]; !ok || o.Err != nil {
			return
		}
		if end, ok := s.ends[k]; !ok || o.Offset > end {
			s.ends[k] = o.Offset
		}
	})
}

// prepare opens the store, creates the sink's tables, reads the schemas
// and creates or checks the read-model table.
func (s *Sink) prepare(ctx context.Context) error {
	m := &s.cfg.Model
	db, d, err := openStore(s.cfg.StoreURL)
	if err != nil {
		return fmt.Errorf("read model %s: store: %w", s.name, err)
	}
	s.st = &store{db: db, d: d}
	fail := func(err error) error {
		db.Close()
		return fmt.Errorf("read model %s: %w", s.name, err)
	}
	if err := ping(ctx, db); err != nil {
		return fail(fmt.Errorf("store %s does not answer: %w", d.name(), err))
	}
	if err := s.st.ensureSinkTables(ctx); err != nil {
		return fail(err)
	}
	for _, w := range s.st.binaryNames(ctx) {
		s.log.Warn(w, "store", d.name())
	}
	p, err := compile(ctx, m, s.cfg.Registry, s.api)
	if err != nil {
		return fail(err)
	}
	s.a = &applier{p: p, st: s.st}
	copied := false
	if s.likeTable != "" {
		var warnings []string
		var retyped []retype
		if copied, retyped, warnings, err = s.st.createShadow(ctx, p, s.likeTable); err != nil {
			return fail(err)
		}
		if copied {
			s.log.Info("created the rebuilt table from the live table's definition", "table", m.Table, "from", s.likeTable, "store", d.name())
		}
		for _, r := range retyped {
			s.log.Info("the rebuilt table gives a column the type the read model wants now", "table", s.likeTable, "column", r.column, "from", r.from, "to", r.to, "store", d.name())
		}
		for _, w := range warnings {
			s.log.Warn(w, "table", s.likeTable, "store", d.name())
		}
	}
	if s.likeTable == "" { // a rebuild's table starts with its offsets forgotten
		if err := s.st.lostTable(ctx, m.Name, m.Table); err != nil {
			return fail(err)
		}
	}
	created, notes, err := s.st.ensureTable(ctx, p)
	if err != nil && copied {
		return fail(fmt.Errorf("the rebuilt table is created from table %s, which does not fit the read model: alter table %s as said below for the rebuilt one, or drop it so that the rebuild creates the table from the schemas: %w",
			d.quote(s.likeTable), d.quote(s.likeTable), err))
	}
	if err != nil {
		return fail(err)
	}
	if created {
		s.log.Info("created read-model table", "table", m.Table, "store", d.name())
	}
	// The caveats `replicator check` shows (a string into a bounded type):
	// said once here too, since a sink is often started without a check.
	for _, n := range notes {
		s.log.Warn(n, "table", m.Table, "store", d.name())
	}
	// Started: a stop recorded by a run before is over. A rebuild records
	// none (its error goes to the user who runs it).
	if s.likeTable == "" {
		if err := s.st.clearStop(ctx, m.Name); err != nil {
			return fail(err)
		}
	}
	return nil
}

// adjust starts every assigned partition at the offset stored with the
// rows (the truth), or at the start when none is stored: never at the
// group's committed offset, which is for monitoring only.
func (s *Sink) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored, err := s.settledOffsets(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var from []string // for the log: who consumes what, from where
	for t, parts := range offsets {
		for p := range parts {
			k := tp{t, p}
			delete(s.ends, k) // known again from its fetches (noteEnds only raises)
			if o, ok := stored[k]; ok {
				parts[p] = kgo.NewOffset().At(o.next).WithEpoch(-1)
				s.expected[k] = o.next
				from = append(from, fmt.Sprintf("%s/%d@%d", t, p, o.next))
			} else {
				parts[p] = kgo.NewOffset().AtStart()
				s.expected[k] = -1
				from = append(from, fmt.Sprintf("%s/%d@start", t, p))
			}
		}
	}
	if len(from) > 0 {
		sort.Strings(from)
		s.log.Info("partitions assigned; consuming from the offsets stored with the rows", "partitions", strings.Join(from, " "))
	}
	return offsets, nil
}

// drop forgets revoked or lost partitions: a batch of theirs no longer
// commits.
func (s *Sink) drop(_ context.Context, _ *kgo.Client, parts map[string][]int32, how string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string
	for t, ps := range parts {
		for _, p := range ps {
			delete(s.expected, tp{t, p})
			delete(s.ends, tp{t, p})
			gone = append(gone, fmt.Sprintf("%s/%d", t, p))
		}
	}
	if len(gone) > 0 {
		sort.Strings(gone)
		s.log.Info("partitions "+how+": this process no longer applies them", "partitions", strings.Join(gone, " "))
	}
}

// reload reads the stored offsets of the assigned partitions again after a
// fence and moves the consumer there.
func (s *Sink) reload(ctx context.Context) error {
	stored, err := s.settledOffsets(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	set := map[string]map[int32]kgo.EpochOffset{}
	for k := range s.expected {
		next := int64(0)
		s.expected[k] = -1
		if o, ok := stored[k]; ok {
			next = o.next
			s.expected[k] = o.next
		}
		if set[k.topic] == nil {
			set[k.topic] = map[int32]kgo.EpochOffset{}
		}
		set[k.topic][k.part] = kgo.EpochOffset{Epoch: -1, Offset: next}
	}
	s.mu.Unlock()
	s.cl.SetOffsets(set)
	return nil
}

func (s *Sink) expectedCopy() map[tp]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[tp]int64, len(s.expected))
	for k, v := range s.expected {
		out[k] = v
	}
	return out
}

// processDecoded applies one poll's records: decoded (those of b.recs
// before b.n were decoded ahead, the rest are decoded here), poison records
// handled per on_error, deduplicated per (source, topic key), written in
// one transaction with the offsets' compare-and-set. A batch the store
// rejects is applied again record by record to find the culprit.
func (s *Sink) processDecoded(ctx context.Context, b *decodedBatch) error {
	recs := b.recs
	// A batch counts once when any of it committed, whichever path
	// committed it: a user reads batches as polls, not as transactions.
	before := s.records.Load()
	defer func() {
		if s.records.Load() > before {
			s.batches.Add(1)
		}
	}()
	expected := s.expectedCopy()
	todo := make([]*kgo.Record, 0, len(recs))
	at := make([]int, 0, len(recs)) // index in recs of each of todo
	// A poll's records come in runs of one partition: its offsets are
	// looked up (and below, set) once per run, not hashed per record.
	var k tp
	var e int64
	var ok bool
	for i, r := range recs {
		if i == 0 || r.Partition != k.part || r.Topic != k.topic {
			k = tp{r.Topic, r.Partition}
			e, ok = expected[k]
		}
		if ok && r.Offset >= e { // below e: applied already (a replay after a fence)
			todo = append(todo, r)
			at = append(at, i)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	entries := make([]entry, 0, len(todo))
	for j, r := range todo {
		var e entry
		var err error
		if i := at[j]; i < b.n {
			e, err = b.ents[i], b.errs[i]
		} else {
			e, err = s.a.decode(ctx, s.a.sourceOf(r.Topic), r)
		}
		if err != nil {
			if !errors.Is(err, errUndecodable) {
				return fmt.Errorf("topic %s partition %d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			if err := s.poison(ctx, recordError(r, err)); err != nil {
				return err
			}
			continue
		}
		entries = append(entries, e)
	}
	next := map[tp]int64{}
	for j, r := range todo {
		if j+1 == len(todo) || todo[j+1].Partition != r.Partition || todo[j+1].Topic != r.Topic { // a run's last
			next[tp{r.Topic, r.Partition}] = r.Offset + 1
		}
	}
	batch := latest(entries)
	// A transient failure (the store busy or out of reach) is returned
	// as is: the caller retries the whole batch (processRetrying).
	err := s.commit(ctx, expected, next, func(tx batchTx) error {
		return s.a.write(ctx, tx, batch, time.Now().UnixNano())
	})
	switch {
	case err == nil:
		s.committed(next, int64(len(todo)), entries)
		return nil
	case errors.Is(err, errFenced):
		return s.fence(ctx, err, expected, next)
	case ctx.Err() != nil:
		return err
	case errors.As(err, new(*redecodeError)):
		return err // retried (processRetrying) or stops, as a decoding's
	}
	if err := s.unavailable(ctx, err); err != nil {
		return err
	}
	if isTableFault(err) {
		return fmt.Errorf("table %s refuses the batch's statements, whatever the records (no record is dead-lettered for it): %w; check that it fits the read model: its primary key exactly the key column(s) %s, the columns present and writable, or drop it and run replicator rebuild (it creates the table and reads the topics from the start)", s.st.d.quote(s.cfg.Model.Table), err, strings.Join(s.cfg.Model.Key, ", "))
	}
	s.log.Warn("the store rejected a batch; applying it record by record to find the culprit", "records", len(todo), "error", err)
	s.split.Add(1)
	decoded := make(map[*kgo.Record]int, len(entries)) // built only here: a batch rarely splits
	for i, e := range entries {
		decoded[e.rec] = i
	}
	return s.oneByOne(ctx, todo, entries, decoded, expected)
}

// oneByOne applies records in order, each in its own transaction with its
// partition's offset, so that a record the store rejects is isolated.
func (s *Sink) oneByOne(ctx context.Context, todo []*kgo.Record, entries []entry, decoded map[*kgo.Record]int, expected map[tp]int64) error {
	for _, r := range todo {
		k := tp{r.Topic, r.Partition}
		next := map[tp]int64{k: r.Offset + 1}
		exp := map[tp]int64{k: expected[k]}
		i, ok := decoded[r]
		write := func(tx batchTx) error { return nil } // dead-lettered already: the offset only
		if ok {
			write = func(tx batchTx) error {
				return s.a.write(ctx, tx, entries[i:i+1], time.Now().UnixNano())
			}
		}
		err := s.commit(ctx, exp, next, write)
		// Under suspicion a record that ends the connection is tried
		// again (with the store answering) before it counts as the
		// culprit: one lost connection may be a coincidence.
		for again := 1; err != nil && s.suspect && connectionEnded(err) && again < suspectAfter; again++ {
			if perr := s.pingStore(ctx); perr != nil {
				break // an outage after all: unavailable says so
			}
			err = s.commit(ctx, exp, next, write)
		}
		if errors.Is(err, errFenced) {
			return s.fence(ctx, err, exp, next)
		}
		var written []entry // nil when dead-lettered
		if err == nil && ok {
			written = entries[i : i+1]
		}
		if err != nil {
			if errors.As(err, new(*redecodeError)) {
				return err // the record's decoding failed, not the record: as in processDecoded
			}
			if err := s.unavailable(ctx, err); err != nil {
				return err
			}
			var pe *PoisonError
			switch {
			case errors.As(err, &pe):
			case s.suspect && connectionEnded(err):
				err = recordError(r, fmt.Errorf("it ended the store's connection %d times in a row while the store answered at once (the record's statement, not an outage): %w", suspectAfter, err))
			default:
				err = recordError(r, fmt.Errorf("the store rejected it: %w", err))
			}
			if err := s.poison(ctx, err); err != nil {
				return err
			}
			if err := s.commit(ctx, exp, next, func(batchTx) error { return nil }); err != nil {
				if errors.Is(err, errFenced) {
					return s.fence(ctx, err, exp, next)
				}
				return err
			}
		}
		expected[k] = r.Offset + 1
		s.committed(next, 1, written)
	}
	return nil
}

// unavailable returns the store's failure of a batch as the store's (for
// processRetrying to retry) when it is transient or the store no longer
// answers, nil when the store answers and refused the batch itself.
func (s *Sink) unavailable(ctx context.Context, err error) error {
	if isTransient(err) && !(s.suspect && connectionEnded(err)) {
		return &storeError{err}
	}
	if perr := s.pingStore(ctx); perr != nil {
		// Only the ping's error is wrapped: it is the one that says
		// whether to retry (the batch's may be a constraint violation
		// that was a symptom of a breaking connection).
		return &storeError{fmt.Errorf("store does not answer: %w (the batch failed with: %v)", perr, err)}
	}
	return nil
}

// pingStore checks that the store answers, within pingTimeout.
func (s *Sink) pingStore(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	return s.st.db.PingContext(ctx)
}

// pingTimeout bounds the ping that tells an outage from a batch the store
// refused.
const pingTimeout = 10 * time.Second

// storeError is a batch's failure for want of the store (unavailable):
// processRetrying retries it, and counts whether the batch itself ended
// the connection.
type storeError struct{ err error }

func (e *storeError) Error() string { return "store: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// commit runs write and the offsets' compare-and-set in one transaction.
func (s *Sink) commit(ctx context.Context, expected, next map[tp]int64, write func(batchTx) error) error {
	tx, err := s.st.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer s.st.end() // rolls back unless committed
	s.st.foldCAS(s.cfg.Model.Table, s.cfg.Model.Name, expected, next)
	if err := write(tx); err != nil {
		return err
	}
	if err := s.st.casOffsets(ctx, tx, s.cfg.Model.Name, expected, next); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// committed records a committed batch of n records, written of them in
// the read model (the others dead-lettered): the expected offsets move,
// the observer hears how long after their commit the written ones became
// visible, and the group's offsets are committed for monitoring (lag
// tools); the store stays the truth, so a failure there is only logged.
func (s *Sink) committed(next map[tp]int64, n int64, written []entry) {
	if obs := s.cfg.Observer; obs != nil {
		now := time.Now()
		for i := range written {
			// A producer may leave the header out (the contract's
			// consumers need only key and value): nothing to tell then.
			v, ok := cdc.Header(written[i].rec.Headers, cdc.HeaderCommitTime)
			if !ok {
				continue
			}
			// A transaction's records carry the same bytes: parsed once.
			if !bytes.Equal(v, s.commitRaw) {
				at, err := cdc.ParseCommitTime(v)
				if err != nil {
					continue
				}
				s.commitRaw, s.commitAt = append(s.commitRaw[:0], v...), at
			}
			// Not below zero: the commit time is PostgreSQL's clock (a
			// snapshot row's, replicator's), the now this host's.
			obs.ObserveVisible(max(now.Sub(s.commitAt), 0))
		}
	}
	s.mu.Lock()
	for k, v := range next {
		if _, ok := s.expected[k]; ok {
			s.expected[k] = v
		}
	}
	s.mu.Unlock()
	s.records.Add(n)
	if s.groupPending == nil {
		s.groupPending = map[string]map[int32]kgo.EpochOffset{}
	}
	for k, v := range next {
		if s.groupPending[k.topic] == nil {
			s.groupPending[k.topic] = map[int32]kgo.EpochOffset{}
		}
		s.groupPending[k.topic][k.part] = kgo.EpochOffset{Epoch: -1, Offset: v}
	}
	if time.Since(s.groupAt) >= groupCommitInterval {
		s.commitGroup(context.Background(), false)
	}
}

// groupCommitInterval spaces the group's offset commits: they are for lag
// tools only, and one per batch (a hundred a second in the steady state)
// cost the sink and the broker a request each for nothing a tool shows.
const groupCommitInterval = time.Second

// commitGroup commits the group offsets of the batches committed in the
// store since the last time (for monitoring only: the store stays the
// truth, so a failure is only logged). sync waits for the answer (at a
// stop); else kgo owns the request and the batch does not wait for it.
func (s *Sink) commitGroup(ctx context.Context, sync bool) {
	if len(s.groupPending) == 0 {
		return
	}
	offsets := s.groupPending
	s.groupPending, s.groupAt = nil, time.Now()
	done := make(chan struct{})
	s.cl.CommitOffsets(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.log.Debug("commit group offsets (monitoring only)", "error", err)
		}
		close(done)
	})
	if sync {
		<-done
	}
}

// fence handles a batch whose offsets moved: nothing of it was applied
// by this attempt; consumption resumes at the stored offsets. expected
// and next are where the batch found and would leave its partitions'
// offsets.
func (s *Sink) fence(ctx context.Context, cause error, expected, next map[tp]int64) error {
	s.fenced.Add(1)
	if err := s.reload(ctx); err != nil {
		return err
	}
	if withinBatch(expected, s.expectedCopy(), next) {
		s.log.Info("batch already applied, wholly or in part: its partitions' stored offsets moved within its own records (most likely an earlier attempt's commit went through and its reply was lost with the connection; or another sink process applied the same records); resuming after them", "detail", cause)
		return nil
	}
	s.log.Info("batch rolled back: its partitions' stored offsets moved (another sink process applied them); resuming from the stored offsets", "detail", cause)
	return nil
}

// withinBatch reports whether the stored offsets, reloaded after a fence,
// moved only within the batch's own records: past where the batch found
// them (expected) and no further than where it leaves them (next), for
// each of its partitions, and past for one at least. That is what a retry
// finds after its earlier attempt's COMMIT went through unacknowledged.
func withinBatch(expected, stored, next map[tp]int64) bool {
	moved := false
	for k, n := range next {
		o, ok := stored[k]
		if !ok || o < expected[k] || o > n {
			return false
		}
		moved = moved || o > expected[k]
	}
	return moved
}

// poison applies on_error to a record: Stop returns the error (the
// offsets stay before the record); DeadLetter produces it to the
// dead-letter topic, waits for the acknowledgement, and returns nil.
func (s *Sink) poison(ctx context.Context, err error) error {
	var pe *PoisonError
	if !errors.As(err, &pe) || s.cfg.Model.OnError != DeadLetter {
		return err
	}
	rec := pe.rec
	if rec == nil {
		return err
	}
	out := &kgo.Record{
		Topic: s.cfg.Model.DeadLetterTopic,
		Key:   rec.Key,
		Value: rec.Value,
		Headers: append(append([]kgo.RecordHeader{}, rec.Headers...),
			kgo.RecordHeader{Key: "replicator.error", Value: []byte(pe.Err.Error())},
			kgo.RecordHeader{Key: "replicator.topic", Value: []byte(rec.Topic)},
			kgo.RecordHeader{Key: "replicator.partition", Value: []byte(strconv.Itoa(int(rec.Partition)))},
			kgo.RecordHeader{Key: "replicator.offset", Value: []byte(strconv.FormatInt(rec.Offset, 10))},
			kgo.RecordHeader{Key: "replicator.read_model", Value: []byte(s.name)},
		),
	}
	id := tpo{tp{rec.Topic, rec.Partition}, rec.Offset}
	if _, sent := s.dlqSent[id]; sent {
		return nil // by an earlier attempt at this batch (processRetrying)
	}
	if perr := s.cl.ProduceSync(ctx, out).FirstErr(); perr != nil {
		return fmt.Errorf("%w; and producing it to dead-letter topic %s failed: %v", err, s.cfg.Model.DeadLetterTopic, perr)
	}
	if s.dlqSent == nil {
		s.dlqSent = map[tpo]struct{}{}
	}
	s.dlqSent[id] = struct{}{}
	s.deadLettered.Add(1)
	s.log.Warn("poison record sent to the dead-letter topic", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "dead_letter_topic", s.cfg.Model.DeadLetterTopic, "error", pe.Err)
	return nil
}

// ensureDeadLetterTopic creates the dead-letter topic when missing (the
// broker's default partitions and replication; not compacted: every poison
// record is kept).
func (s *Sink) ensureDeadLetterTopic(ctx context.Context) error {
	adm := kadm.NewClient(s.cl)
	res, err := adm.CreateTopic(ctx, -1, -1, nil, s.cfg.Model.DeadLetterTopic)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("read model %s: create dead-letter topic %s: %w", s.name, s.cfg.Model.DeadLetterTopic, err)
	}
	return nil
}

// lagCheckInterval spaces the checks for missed tombstones of a running
// read model: one that falls behind by more than delete.retention.ms (a
// day by default) is told within this.
const lagCheckInterval = 5 * time.Minute

// reportLag warns when the read model may have missed tombstones
// ([CheckLag]).
func (s *Sink) reportLag(ctx context.Context, topics []string) {
	s.lagAt = time.Now()
	lags, err := CheckLag(ctx, kadm.NewClient(s.cl), s.st, s.cfg.Model.Name, topics, time.Now())
	if err != nil {
		s.log.Warn("could not check for missed tombstones", "error", err)
		return
	}
	for _, l := range lags {
		s.log.Warn(l.String())
	}
}

// ping checks the store answers. SQLite's switch to WAL on a new
// connection takes the file's lock without waiting for a busy one, so read
// models sharing a file and starting together see SQLITE_BUSY for a
// moment: that is retried for a few seconds.
func ping(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := db.PingContext(ctx)
		if err == nil || !strings.Contains(err.Error(), "SQLITE_BUSY") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
