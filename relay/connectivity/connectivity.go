// Package connectivity derives a cluster's connectivity status (Arc's
// Connecting, Connected, Offline, Expired) from its heartbeats and its
// certificate, records each transition as an event, and sweeps the store for
// transitions that happen by the passing of time alone.
package connectivity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

// Tracker computes and records statuses. The zero value is not usable; set
// OfflineAfter.
type Tracker struct {
	// OfflineAfter is how long after its last heartbeat a cluster counts as
	// Offline.
	OfflineAfter time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log; nil means discard.
	Log *slog.Logger
}

func (t *Tracker) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Tracker) log() *slog.Logger {
	if t.Log != nil {
		return t.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Status is the cluster's status now, with the reason.
func (t *Tracker) Status(c *store.Cluster) (status, reason string) {
	now := t.now()
	switch {
	case !c.CertNotAfter.IsZero() && now.After(c.CertNotAfter):
		return api.StatusExpired, "certificate expired on " + c.CertNotAfter.UTC().Format(time.RFC3339) + "; re-register the cluster"
	case c.LastHeartbeat.IsZero():
		return api.StatusConnecting, "registered; no heartbeat yet"
	case now.Sub(c.LastHeartbeat) <= t.OfflineAfter:
		return api.StatusConnected, "heartbeat received"
	default:
		return api.StatusOffline, fmt.Sprintf("no heartbeat for %s", t.OfflineAfter)
	}
}

// Record appends an event if the cluster's status changed and reports
// whether it did. Call it inside a store update.
func (t *Tracker) Record(c *store.Cluster) bool {
	to, reason := t.Status(c)
	if to == c.Status {
		return false
	}
	from := c.Status
	if from == "" {
		from = "None"
	}
	c.AddEvent(store.Event{Time: t.now().UTC(), From: from, To: to, Reason: reason})
	c.Status = to
	t.log().Info("cluster status changed", "cluster", c.Name, "from", from, "to", to, "reason", reason)
	return true
}

// errNoChange aborts an UpdateCluster that has nothing to write.
var errNoChange = errors.New("no change")

// SweepEvery is how often Sweep looks: a quarter of OfflineAfter, between
// 100 ms and 30 s.
func (t *Tracker) SweepEvery() time.Duration {
	return max(min(t.OfflineAfter/4, 30*time.Second), 100*time.Millisecond)
}

// Sweep records the transitions that happen by the passing of time (Offline,
// Expired) until ctx is done.
func (t *Tracker) Sweep(ctx context.Context, st store.Store) {
	every := t.SweepEvery()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(ctx, every)
		cs, err := st.ListClusters(sctx)
		for _, c := range cs {
			if to, _ := t.Status(c); to == c.Status {
				continue
			}
			_, _ = st.UpdateCluster(sctx, c.Name, func(c *store.Cluster) error {
				if !t.Record(c) {
					return errNoChange
				}
				return nil
			})
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			t.log().Warn("status sweep: store unavailable", "err", err)
		}
	}
}
