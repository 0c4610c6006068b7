package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// killableDialer dials over TCP until kill, which closes every connection
// it made and refuses new ones: to the broker, the client's process died
// (a SIGKILL) without leaving its group.
type killableDialer struct {
	mu    sync.Mutex
	dead  bool
	conns []net.Conn
}

func (d *killableDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return nil, errors.New("killed")
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *killableDialer) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = true
	for _, c := range d.conns {
		c.Close()
	}
}

// onJoinWrite is a kgo hook that calls fn after the client has written its
// n-th JoinGroup request.
type onJoinWrite struct {
	mu   sync.Mutex
	seen int
	n    int
	fn   func()
}

var _ kgo.HookBrokerWrite = (*onJoinWrite)(nil)

func (h *onJoinWrite) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != int16(kmsg.JoinGroup) || err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen++; h.seen == h.n {
		h.fn()
	}
}

// owned tracks the partitions a group member holds, from its callbacks.
type owned struct {
	mu    sync.Mutex
	parts map[int32]bool
}

func (o *owned) opts() []kgo.Opt {
	change := func(parts map[string][]int32, held bool) {
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, p := range parts["items"] {
			o.parts[p] = held
		}
	}
	return []kgo.Opt{
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, p map[string][]int32) { change(p, true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, p map[string][]int32) { change(p, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, p map[string][]int32) { change(p, false) }),
	}
}

func (o *owned) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, held := range o.parts {
		if held {
			n++
		}
	}
	return n
}

// TestDeadJoiningMemberRemoved kills a consumer while its JoinGroup waits
// for a rebalance (the group's previous member has just died too), then
// starts a live one: the live one must end up with every partition. kfake
// can keep the killed member in the group without a session timer, holding
// its partitions forever (reaper.go says how); the broker removes a member
// silent for longer than its session timeout. The race in kfake is random
// (without the reaper, 2 to 7 of 12 groups kept a dead member), so 16
// groups run at once. The live member, which heartbeats, is not removed.
func TestDeadJoiningMemberRemoved(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: "items", Partitions: 3})
	const groups = 16
	errs := make([]error, groups)
	var wg sync.WaitGroup
	for i := range groups {
		wg.Go(func() { errs[i] = deadJoiner(t, e.Addr(), fmt.Sprintf("reap-%d", i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("group reap-%d: %v", i, err)
		}
	}
}

// deadJoiner runs the scenario of TestDeadJoiningMemberRemoved in group
// (from a goroutine of the test: it reports instead of failing).
func deadJoiner(t *testing.T, addr, group string) error {
	const session = 6 * time.Second // kfake's smallest
	member := func(name string, extra ...kgo.Opt) error {
		opts := append([]kgo.Opt{
			kgo.SeedBrokers(addr), kgo.ClientID(name),
			kgo.ConsumerGroup(group), kgo.ConsumeTopics("items"),
			kgo.SessionTimeout(session), kgo.RebalanceTimeout(session),
			kgo.HeartbeatInterval(500 * time.Millisecond),
		}, extra...)
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return err
		}
		t.Cleanup(cl.Close)
		return nil
	}
	// waitFor polls cond every 50 ms until it holds or d has passed.
	waitFor := func(d time.Duration, cond func() bool) bool {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(d); !cond(); <-tick.C {
			if time.Now().After(deadline) {
				return false
			}
		}
		return true
	}

	// The first member joins alone and dies holding every partition.
	first := &owned{parts: map[int32]bool{}}
	firstDialer := &killableDialer{}
	if err := member(group+"-first", append(first.opts(), kgo.Dialer(firstDialer.dial))...); err != nil {
		return err
	}
	if !waitFor(testTimeout, func() bool { return first.count() == 3 }) {
		return fmt.Errorf("the first member holds %d of 3 partitions after %v", first.count(), testTimeout)
	}
	firstDialer.kill()

	// The second joins and dies while its JoinGroup (the one with its
	// member ID) waits for the first to rejoin.
	joinerDialer := &killableDialer{}
	joined := make(chan struct{})
	if err := member(group+"-joiner", kgo.Dialer(joinerDialer.dial),
		kgo.WithHooks(&onJoinWrite{n: 2, fn: func() { close(joined) }})); err != nil {
		return err
	}
	select {
	case <-joined:
	case <-time.After(testTimeout):
		return fmt.Errorf("the joiner sent no second JoinGroup in %v", testTimeout)
	}
	joinerDialer.kill()

	// The survivor joins the same rebalance: expected to hold every
	// partition after the rebalance timeout and a session timeout.
	survivor := &owned{parts: map[int32]bool{}}
	began := time.Now()
	if err := member(group+"-survivor", survivor.opts()...); err != nil {
		return err
	}
	if !waitFor(4*session+10*time.Second, func() bool { return survivor.count() == 3 }) {
		return fmt.Errorf("after %v the live member holds %d of 3 partitions: a dead member keeps the others",
			time.Since(began).Round(time.Second), survivor.count())
	}
	t.Logf("group %s: the live member holds every partition after %v", group, time.Since(began).Round(100*time.Millisecond))
	// The reaper leaves a member that heartbeats alone: it keeps every
	// partition for longer than its session timeout and the grace.
	if waitFor(session+3*reapGrace+2*reapInterval, func() bool { return survivor.count() != 3 }) {
		return fmt.Errorf("the live member lost partitions: it holds %d of 3", survivor.count())
	}
	return nil
}

// The reaper's bookkeeping: which requests make a member known, silent or
// forgotten.
func TestReaperBookkeeping(t *testing.T) {
	t0 := time.Unix(1_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	join := func(member string, instance *string) *kmsg.JoinGroupRequest {
		r := kmsg.NewPtrJoinGroupRequest()
		r.Group, r.MemberID, r.InstanceID, r.SessionTimeoutMillis = "g", member, instance, 10_000
		return r
	}
	heartbeat := func(member string) *kmsg.HeartbeatRequest {
		r := kmsg.NewPtrHeartbeatRequest()
		r.Group, r.MemberID = "g", member
		return r
	}
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = "g"
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = "left"
	leave.Members = append(leave.Members, m)
	static := "instance-1"

	r := &reaper{grace: time.Second, members: map[memberKey]*heard{}}
	r.observe(join("", nil), t0)      // a first join: no ID yet
	r.observe(join("quiet", nil), t0) // then silent
	r.observe(join("alive", nil), t0) // heartbeats on
	r.observe(join("left", nil), t0)  // leaves
	r.observe(join("", &static), t0)  // a static member's first join: known by its instance
	r.observe(heartbeat("old"), t0)   // joined before the reaper watched: session unknown
	r.observe(heartbeat("alive"), at(10*time.Second))
	r.observe(leave, at(time.Second))

	names := func(ks []memberKey) []string {
		var out []string
		for _, k := range ks {
			out = append(out, k.id)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		at   time.Duration
		want []string
	}{
		{11 * time.Second, nil},                             // within session + grace
		{11*time.Second + 1, nil},                           // past it: suspect, not yet a candidate
		{12 * time.Second, []string{"instance-1", "quiet"}}, // still silent at the next tick
		{22 * time.Second, []string{"instance-1", "quiet"}}, // alive: suspect only
		{23 * time.Second, []string{"alive", "instance-1", "quiet"}},
	} {
		if got := names(r.silent(at(c.at))["g"]); !slices.Equal(got, c.want) {
			t.Errorf("silent at +%v: got %v, want %v", c.at, got, c.want)
		}
	}

	// The leader's SyncGroup releases the followers: their heartbeats are
	// owed from then on.
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID = "g", "alive"
	sync.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: "alive"}, {MemberID: "quiet"}}
	r.observe(sync, at(30*time.Second))
	if got := names(r.silent(at(40 * time.Second))["g"]); got != nil {
		t.Errorf("after the leader's sync: silent %v, want none", got)
	}
	if ok, _, _ := r.stillSilent(memberKey{"g", "quiet", false}, at(40*time.Second)); ok {
		t.Error("quiet is silent 10 s after the leader's sync")
	}
	if ok, silentFor, session := r.stillSilent(memberKey{"g", "quiet", false}, at(42*time.Second)); !ok || silentFor != 12*time.Second || session != 10*time.Second {
		t.Errorf("stillSilent(quiet, +42s) = %v, %v, %v; want true, 12s, 10s", ok, silentFor, session)
	}

	r.forget(memberKey{"g", "quiet", false})
	if _, ok := r.members[memberKey{"g", "quiet", false}]; ok {
		t.Error("forget left quiet")
	}
	// A member whose session was never seen is dropped after a while.
	r.silent(at(forgetUnknownAfter + time.Minute)) // heard last at the sync, +30 s
	if _, ok := r.members[memberKey{"g", "old", false}]; ok {
		t.Errorf("old (session unknown) still tracked after %v", forgetUnknownAfter)
	}
}

// slowBalancer is a balancer whose leader takes its time on the rebalances
// slow says so (one value per rebalance).
type slowBalancer struct {
	kgo.GroupBalancer
	slow chan bool
	d    time.Duration
}

func (b slowBalancer) MemberBalancer(m []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	if <-b.slow {
		time.Sleep(b.d) // the leader's work, which its followers wait for
	}
	return b.GroupBalancer.MemberBalancer(m)
}

// A follower waits in its SyncGroup while the leader balances, and owes
// no heartbeat until the leader's sync releases it (kfake restarts its
// session timer then). With a leader that balances for longer than the
// follower's session timeout plus the reaper's grace and ticks, minus its
// heartbeat interval, the reaper must not count that wait as silence (it
// did once: the live follower was removed).
//
// kfake's own timers bound the scenario: a member's session timer starts
// when its JoinGroup reply is sent and is not reset by its SyncGroup, so
// the leader must balance well within the session timeout (or kfake
// expires both), and a heartbeat must come well within it. The session
// is long enough that each margin is seconds, not fractions of one, on a
// loaded machine: balance 7 s and heartbeat 7 s of a 10 s session (3 s
// each), while the follower's silence counted from its own SyncGroup
// (balance + heartbeat, 14 s) passes the reaper's threshold (session +
// grace, then one more tick: 12-13 s) before its first heartbeat.
func TestSlowLeaderKeepsFollower(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	e := startEmbedded(t, EmbeddedConfig{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ensure(t, newAdmin(t, e.Addr()), TopicSpec{Name: "items", Partitions: 4})
	const session, heartbeat, balance = 10 * time.Second, 7 * time.Second, 7 * time.Second
	slow := make(chan bool, 64)
	slow <- false // the leader's own first rebalance
	slow <- true  // the follower's join
	for range 60 {
		slow <- false
	}
	member := func(name string) *owned {
		o := &owned{parts: map[int32]bool{}}
		cl, err := kgo.NewClient(append([]kgo.Opt{
			kgo.SeedBrokers(e.Addr()), kgo.ClientID(name),
			kgo.ConsumerGroup("slow"), kgo.ConsumeTopics("items"),
			kgo.SessionTimeout(session), kgo.RebalanceTimeout(30 * time.Second), kgo.HeartbeatInterval(heartbeat),
			kgo.Balancers(slowBalancer{kgo.RangeBalancer(), slow, balance}),
		}, o.opts()...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return o
	}
	leader := member("leader")
	pollUntil(t, "the leader holds every partition", func() bool { return leader.count() == 4 })
	follower := member("follower")
	// Both sync responses leave kfake together, but each client runs its
	// assignment callback on its own goroutine: the follower's can come
	// first, the leader still holding none (eager rebalancing revoked its
	// four). That is the rebalance completing, not another one.
	pollUntil(t, "the leader and the follower hold two partitions each", func() bool { return follower.count() == 2 && leader.count() == 2 })
	// Past the window in which the reaper would have seen it silent.
	deadline := time.Now().Add(session + 3*reapGrace + 2*reapInterval)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ; time.Now().Before(deadline); <-tick.C {
		if follower.count() != 2 || leader.count() != 2 {
			t.Fatalf("the group rebalanced again: leader %d, follower %d partitions; broker log:\n%s", leader.count(), follower.count(), logs.String())
		}
	}
	if strings.Contains(logs.String(), "removed a consumer group member") {
		t.Fatalf("a live member was removed:\n%s", logs.String())
	}
}
