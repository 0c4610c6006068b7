package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// How often the reaper looks for silent members, and how long past its
// session timeout a member must have been silent: a live member's
// heartbeat can be late by a scheduling hiccup, never by a second.
const (
	reapInterval = time.Second
	reapGrace    = time.Second
)

// reaper removes consumer-group members that have stopped talking to the
// broker for longer than their session timeout, which kfake can fail to
// do itself.
//
// Why: kfake (v0.0.0-20260918054303) starts a classic member's session
// timer when its JoinGroup reply is handed to the member's connection. When
// the member's process dies while that JoinGroup waits for a rebalance,
// the hand-over races the closed connection (a select between a buffered
// send and the connection's done channel) and, on the losing side, no
// timer is started. If a live member then leads and syncs the group, the
// group is Stable with a member that never heartbeats and is never
// expired: it keeps the partitions the leader gave it, and no live sink
// ever consumes them (seen as a sink kill test that never converged;
// TestDeadJoiningMemberRemoved: without the reaper 2–7 of 12 groups).
//
// The reaper watches the group requests (JoinGroup, SyncGroup, Heartbeat,
// LeaveGroup) through kfake's control hooks, without handling them, and
// remembers when each member last spoke (for a follower released by the
// leader's SyncGroup, that sync: kfake starts its timer then) and its
// session timeout. A member silent for longer than that plus reapGrace,
// at two ticks in a row and again once its group is described Stable (a
// live member heartbeats well within it; during a rebalance kfake's own
// rebalance and sync timers apply), is removed with a LeaveGroup on its
// behalf, which is what a real broker's session expiry does: the group
// rebalances without it. Not covered: a dynamic member that joined with
// JoinGroup v3 or older (its member ID comes in the reply only); every
// current client (kgo, librdkafka, the Java client) joins with v4+.
type reaper struct {
	interval   time.Duration // how often silent members are looked for
	grace      time.Duration // added to a member's session timeout
	addr       string
	clientOpts []kgo.Opt
	log        *slog.Logger // nil: no log

	mu      sync.Mutex
	members map[memberKey]*heard

	cl  *kgo.Client
	adm *kadm.Client
}

// memberKey names a member: by its member ID, or for a static member by
// its instance ID (a static member's first JoinGroup carries no member ID).
type memberKey struct {
	group, id string
	static    bool
}

func keyOf(group, memberID string, instanceID *string) memberKey {
	if instanceID != nil {
		return memberKey{group, *instanceID, true}
	}
	return memberKey{group, memberID, false}
}

// heard is what the reaper knows of a member.
type heard struct {
	at      time.Time     // when it last sent a group request
	session time.Duration // its session timeout; zero until its JoinGroup is seen
	suspect bool          // found silent at the last tick already
}

// silentAt reports whether the member has been silent at now for longer
// than its session timeout plus grace.
func (h *heard) silentAt(now time.Time, grace time.Duration) bool {
	return h.session > 0 && now.Sub(h.at) > h.session+grace
}

// forgetUnknownAfter drops a member whose session timeout was never seen
// (it joined before this broker process started, restored from the
// DataDir with kfake's own timer) once it has been silent this long: the
// longest session kfake accepts by default.
const forgetUnknownAfter = 30 * time.Minute

// watch installs the reaper's observers on the cluster's group requests.
// They never handle a request, so kfake keeps them and serves the request
// as usual. Their cost, kfake's: each observer keeps the last request of
// every connection that sent it one, closed connections included (one
// small entry per group connection a consumer ever opened).
func (r *reaper) watch(c *kfake.Cluster) {
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.LeaveGroup} {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.observe(req, time.Now())
			return nil, nil, false
		})
	}
}

// observe records what req says of its member.
func (r *reaper) observe(req kmsg.Request, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		// A dynamic member's first join gets its ID in the reply; the
		// second carries it.
		if req.MemberID != "" || req.InstanceID != nil {
			r.heardFrom(keyOf(req.Group, req.MemberID, req.InstanceID), now).session = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
		}
	case *kmsg.SyncGroupRequest:
		r.heardFrom(keyOf(req.Group, req.MemberID, req.InstanceID), now)
		if len(req.GroupAssignment) > 0 {
			// The leader's sync releases every follower waiting in its
			// own, and kfake starts their session timers then: from
			// here, not from their SyncGroup, they owe a heartbeat.
			for k, h := range r.members {
				if k.group == req.Group {
					h.at, h.suspect = now, false
				}
			}
		}
	case *kmsg.HeartbeatRequest:
		r.heardFrom(keyOf(req.Group, req.MemberID, req.InstanceID), now)
	case *kmsg.LeaveGroupRequest:
		delete(r.members, memberKey{req.Group, req.MemberID, false})
		for _, m := range req.Members {
			delete(r.members, keyOf(req.Group, m.MemberID, m.InstanceID))
		}
	}
}

func (r *reaper) heardFrom(k memberKey, now time.Time) *heard {
	h := r.members[k]
	if h == nil {
		h = &heard{}
		r.members[k] = h
	}
	h.at, h.suspect = now, false
	return h
}

// silent returns, by group, the members silent past their session timeout
// plus the grace at now and at the tick before: one late heartbeat
// (queued behind a busy broker loop) does not make a member a candidate.
func (r *reaper) silent(now time.Time) map[string][]memberKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]memberKey{}
	for k, h := range r.members {
		switch {
		case h.session == 0 && now.Sub(h.at) > forgetUnknownAfter:
			delete(r.members, k)
		case !h.silentAt(now, r.grace):
		case h.suspect:
			out[k.group] = append(out[k.group], k)
		default:
			h.suspect = true
		}
	}
	return out
}

// stillSilent reports whether member k is still silent at now, and for
// how long.
func (r *reaper) stillSilent(k memberKey, now time.Time) (bool, time.Duration, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.members[k]
	if h == nil || !h.silentAt(now, r.grace) {
		return false, 0, 0
	}
	return true, now.Sub(h.at), h.session
}

func (r *reaper) forget(k memberKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.members, k)
}

func (r *reaper) run(ctx context.Context) {
	defer r.close()
	// A failure that repeats is logged once a minute, not every tick.
	var last string
	var loggedAt time.Time
	every(ctx, r.interval, r.log, "removing silent consumer group members failed", func() error {
		err := r.reap(ctx, time.Now())
		if err == nil || (err.Error() == last && time.Since(loggedAt) < time.Minute) {
			return nil
		}
		last, loggedAt = err.Error(), time.Now()
		return err
	})
}

// reap removes the silent members that their Stable group still lists.
// Members the group no longer lists (kfake expired them, or the group
// moved on) are forgotten. A group that fails is skipped (tried again at
// the next tick), not the others.
func (r *reaper) reap(ctx context.Context, now time.Time) error {
	silent := r.silent(now)
	if len(silent) == 0 {
		return nil
	}
	if r.adm == nil {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(r.addr)}, r.clientOpts...)...)
		if err != nil {
			return fmt.Errorf("admin client: %w", err)
		}
		r.cl, r.adm = cl, kadm.NewClient(cl)
	}
	groups := make([]string, 0, len(silent))
	for g := range silent {
		groups = append(groups, g)
	}
	described, err := r.adm.DescribeGroups(ctx, groups...)
	if err != nil {
		return fmt.Errorf("describe groups %v: %w", groups, err)
	}
	var errs []error
	for group, members := range silent {
		d, ok := described[group]
		if !ok || errors.Is(d.Err, kerr.GroupIDNotFound) {
			for _, k := range members {
				r.forget(k)
			}
			continue
		}
		if d.Err != nil {
			errs = append(errs, fmt.Errorf("describe group %s: %w", group, d.Err))
			continue
		}
		for _, k := range members {
			m, ok := listedMember(d.Members, k)
			if !ok {
				r.forget(k)
				continue
			}
			// Outside Stable kfake's rebalance and sync timers apply. A
			// member heard while the group was described is alive.
			if d.State != "Stable" {
				continue
			}
			silent, silentFor, session := r.stillSilent(k, time.Now())
			if !silent {
				continue
			}
			if err := r.remove(ctx, k, m.MemberID); err != nil {
				errs = append(errs, err)
				continue
			}
			r.forget(k)
			if r.log != nil {
				attrs := []any{"group", group, "member", m.MemberID, "client_id", m.ClientID, "host", m.ClientHost,
					"silent_for", silentFor.Round(time.Second), "session_timeout", session}
				if k.static {
					attrs = append(attrs, "instance_id", k.id)
				}
				r.log.Warn("embedded broker: removed a consumer group member silent past its session timeout, which kfake had kept in the group; the group rebalances without it", attrs...)
			}
		}
	}
	return errors.Join(errs...)
}

// listedMember finds member k among a described group's members.
func listedMember(members []kadm.DescribedGroupMember, k memberKey) (kadm.DescribedGroupMember, bool) {
	for _, m := range members {
		if (!k.static && m.MemberID == k.id) || (k.static && m.InstanceID != nil && *m.InstanceID == k.id) {
			return m, true
		}
	}
	return kadm.DescribedGroupMember{}, false
}

// remove makes member k (member ID memberID) leave its group, as its
// session's expiry would.
func (r *reaper) remove(ctx context.Context, k memberKey, memberID string) error {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = k.group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = memberID
	if k.static {
		m.InstanceID = &k.id
	}
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, r.cl)
	if err != nil {
		return fmt.Errorf("remove member %s of group %s: %w", memberID, k.group, err)
	}
	codes := []int16{resp.ErrorCode}
	for _, rm := range resp.Members {
		codes = append(codes, rm.ErrorCode)
	}
	for _, code := range codes {
		// Unknown: it left or expired since it was described.
		if err := kerr.ErrorForCode(code); err != nil && !errors.Is(err, kerr.UnknownMemberID) {
			return fmt.Errorf("remove member %s of group %s: %w", memberID, k.group, err)
		}
	}
	return nil
}

func (r *reaper) close() {
	if r.cl != nil {
		r.cl.Close()
	}
}
