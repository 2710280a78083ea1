// Package heartbeat is the resource-sync role: it tells the relay, with the
// cluster's identity, that the cluster is alive, on an interval (jittered),
// and sends the cluster's metadata whenever it changed.
package heartbeat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

// DefaultInterval between heartbeats; the relay counts a cluster Offline
// after 15 minutes without one.
const DefaultInterval = time.Minute

// Config wires a Sender.
type Config struct {
	// RelayURL is the relay's base URL.
	RelayURL string
	// Client calls the relay with the cluster's certificate (mTLS).
	Client *http.Client
	// Collect gathers the metadata; nil sends heartbeats without metadata.
	Collect func(context.Context) (api.Metadata, error)
	// Interval between heartbeats; zero means DefaultInterval. Each wait is
	// jittered by ±10%.
	Interval time.Duration
	// Logger; nil means discard.
	Logger *slog.Logger
}

// Sender sends heartbeats.
type Sender struct {
	cfg  Config
	log  *slog.Logger
	sent *api.Metadata // last metadata the relay accepted
}

// New returns a Sender.
func New(cfg Config) *Sender {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sender{cfg: cfg, log: cfg.Logger}
}

// Run sends a heartbeat at once and then every Interval until ctx is done.
// When the relay cannot be reached it retries with backoff (never more often
// than the interval allows) and logs once when heartbeats fail and once when
// they resume, not once per attempt.
func (s *Sender) Run(ctx context.Context) {
	backoff := tunnel.Backoff{Min: time.Second, Max: s.cfg.Interval}
	failures := 0
	var lastErr, lastCollectErr string
	for {
		var md *api.Metadata
		if s.cfg.Collect != nil {
			m, err := s.cfg.Collect(ctx)
			if err != nil {
				if msg := err.Error(); msg != lastCollectErr {
					s.log.Warn("cluster metadata unavailable; heartbeats go without it", "err", err)
					lastCollectErr = msg
				}
			} else {
				lastCollectErr = ""
				if s.sent == nil || !reflect.DeepEqual(*s.sent, m) {
					md = &m
				}
			}
		}
		status, err := s.send(ctx, md)
		wait := jitter(s.cfg.Interval)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			if msg := err.Error(); msg != lastErr {
				s.log.Warn("heartbeat failed; retrying with backoff", "err", err)
				lastErr = msg
			}
			wait = min(wait, backoff.Delay(failures-1))
		default:
			if failures > 0 {
				s.log.Info("heartbeats resumed", "after_failures", failures, "status", status)
			} else if s.sent == nil || md != nil {
				s.log.Info("heartbeat sent", "status", status, "metadata", md != nil)
			}
			failures, lastErr = 0, ""
			if md != nil {
				s.sent = md
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

func (s *Sender) send(ctx context.Context, md *api.Metadata) (string, error) {
	body, _ := json.Marshal(api.HeartbeatRequest{Metadata: md})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(s.cfg.RelayURL, "/")+api.HeartbeatPath, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("relay unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, api.MaxAgentBody))
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return "", fmt.Errorf("relay refused the heartbeat: HTTP %d: %s", resp.StatusCode, msg)
	}
	var r api.HeartbeatResponse
	_ = json.Unmarshal(b, &r)
	return r.ConnectivityStatus, nil
}
