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
// TestDeadJoiningMemberRemoved reproduces it in most runs of 12 groups).
//
// The reaper watches the group requests (JoinGroup, SyncGroup, Heartbeat,
// LeaveGroup) through kfake's control hooks, without handling them, and
// remembers when each member last spoke and its session timeout. A member
// silent for longer than that while its group is Stable (a live member
// heartbeats well within it; during a rebalance kfake's own rebalance and
// sync timers apply) is removed with a LeaveGroup on its behalf, which is
// what a real broker's session expiry does: the group rebalances without it.
// How often the reaper looks for silent members, and how long past its
// session timeout a member must have been silent: a live member's
// heartbeat can be late by a scheduling hiccup, never by a second.
const (
	reapInterval = time.Second
	reapGrace    = time.Second
)

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

type memberKey struct{ group, member string }

// heard is when a member last sent a group request, and its session
// timeout (zero until its JoinGroup has been seen).
type heard struct {
	at      time.Time
	session time.Duration
}

// silentAt reports whether the member has been silent at now for longer
// than its session timeout plus grace.
func (h *heard) silentAt(now time.Time, grace time.Duration) bool {
	return h.session > 0 && now.Sub(h.at) > h.session+grace
}

// watch installs the reaper's observers on the cluster's group requests.
// They never handle a request, so kfake keeps them and serves the request
// as usual. (kfake remembers, per observer, the last request of every
// connection that sent one: a few hundred bytes per consumer connection
// over the broker's life.)
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
		if req.MemberID != "" { // a first join gets its ID in the reply
			r.heardFrom(req.Group, req.MemberID, now).session = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
		}
	case *kmsg.SyncGroupRequest:
		r.heardFrom(req.Group, req.MemberID, now)
	case *kmsg.HeartbeatRequest:
		r.heardFrom(req.Group, req.MemberID, now)
	case *kmsg.LeaveGroupRequest:
		delete(r.members, memberKey{req.Group, req.MemberID})
		for _, m := range req.Members {
			delete(r.members, memberKey{req.Group, m.MemberID})
		}
	}
}

func (r *reaper) heardFrom(group, member string, now time.Time) *heard {
	k := memberKey{group, member}
	h := r.members[k]
	if h == nil {
		h = &heard{}
		r.members[k] = h
	}
	h.at = now
	return h
}

// silent returns, by group, the members that have not spoken for longer
// than their session timeout plus the grace.
func (r *reaper) silent(now time.Time) map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for k, h := range r.members {
		if h.silentAt(now, r.grace) {
			out[k.group] = append(out[k.group], k.member)
		}
	}
	return out
}

// stillSilent reports whether member of group is still silent at now.
func (r *reaper) stillSilent(group, member string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.members[memberKey{group, member}]
	return h != nil && h.silentAt(now, r.grace)
}

func (r *reaper) forget(group, member string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.members, memberKey{group, member})
}

func (r *reaper) run(ctx context.Context) {
	defer r.close()
	every(ctx, r.interval, r.log, "removing silent consumer group members failed", func() error {
		return r.reap(ctx, time.Now())
	})
}

// reap removes the silent members that their Stable group still lists.
// Members the group no longer lists (kfake expired them, or the group
// moved on) are forgotten.
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
	for group, members := range silent {
		d, ok := described[group]
		if !ok || errors.Is(d.Err, kerr.GroupIDNotFound) {
			for _, id := range members {
				r.forget(group, id)
			}
			continue
		}
		if d.Err != nil {
			continue // asked again at the next tick
		}
		listed := map[string]kadm.DescribedGroupMember{}
		for _, m := range d.Members {
			listed[m.MemberID] = m
		}
		for _, id := range members {
			m, ok := listed[id]
			if !ok {
				r.forget(group, id)
				continue
			}
			// Outside Stable kfake's rebalance and sync timers apply. A
			// member heard while the group was described (its heartbeats
			// queued behind a busy broker loop) is alive.
			if d.State != "Stable" || !r.stillSilent(group, id, time.Now()) {
				continue
			}
			if err := r.remove(ctx, group, id); err != nil {
				return err
			}
			r.forget(group, id)
			if r.log != nil {
				r.log.Warn("embedded broker: removed a consumer group member that stopped heartbeating (a process that died while joining); the group rebalances without it",
					"group", group, "member", id, "client_id", m.ClientID, "host", m.ClientHost)
			}
		}
	}
	return nil
}

// remove makes member leave group, as its session's expiry would.
func (r *reaper) remove(ctx context.Context, group, member string) error {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = member
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, r.cl)
	if err != nil {
		return fmt.Errorf("remove member %s of group %s: %w", member, group, err)
	}
	codes := []int16{resp.ErrorCode}
	for _, rm := range resp.Members {
		codes = append(codes, rm.ErrorCode)
	}
	for _, code := range codes {
		// Unknown: it left or expired since it was described.
		if err := kerr.ErrorForCode(code); err != nil && !errors.Is(err, kerr.UnknownMemberID) {
			return fmt.Errorf("remove member %s of group %s: %w", member, group, err)
		}
	}
	return nil
}

func (r *reaper) close() {
	if r.cl != nil {
		r.cl.Close()
	}
}
