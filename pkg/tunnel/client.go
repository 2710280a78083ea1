package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// DialOptions configure the agent's side of a tunnel. A nil *DialOptions
// means defaults.
type DialOptions struct {
	// TLSConfig verifies the relay (RootCAs: the CA bundle; nil uses the
	// system pool) and may present a client certificate. Nil means a default
	// client config. MinVersion is raised to TLS 1.3 and NextProtos is
	// overridden (the upgrade is HTTP/1.1), as SPEC.md requires.
	TLSConfig *tls.Config
	// Proxy picks an HTTPS proxy for the relay URL. Nil means
	// http.ProxyFromEnvironment (HTTPS_PROXY, NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// Header is sent with the WebSocket upgrade, e.g. the credentials. A
	// missing User-Agent is set to UserAgent.
	Header http.Header
	// Config tunes the session.
	Config *Config
}

// UserAgent is sent on the upgrade unless DialOptions.Header sets another.
const UserAgent = "clusterconnect-agent"

// Dial connects one tunnel to the relay's agent endpoint (an https:// or
// wss:// URL) and returns the agent's side of the session; call Serve on it.
// The error says what the relay answered when it refused the upgrade.
func Dial(ctx context.Context, relayURL string, opts *DialOptions) (*Session, error) {
	if opts == nil {
		opts = &DialOptions{}
	}
	cfg := opts.Config.withDefaults()
	var tlsCfg *tls.Config
	if opts.TLSConfig != nil {
		tlsCfg = opts.TLSConfig.Clone()
	} else {
		tlsCfg = &tls.Config{}
	}
	// SPEC.md §1: TLS 1.3, ALPN http/1.1 only.
	tlsCfg.MinVersion = max(tlsCfg.MinVersion, tls.VersionTLS13)
	tlsCfg.NextProtos = []string{"http/1.1"}
	header := opts.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if header.Get("User-Agent") == "" {
		header.Set("User-Agent", UserAgent)
	}
	proxy := opts.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	tr := &http.Transport{
		Proxy:               proxy,
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: cfg.DialTimeout,
		ForceAttemptHTTP2:   false,
		DisableKeepAlives:   true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	defer tr.CloseIdleConnections()
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout+cfg.KeepAliveTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(dctx, relayURL, &websocket.DialOptions{
		// Coalesce the client's masked writes: coder/websocket flushes every
		// 4 KiB, which made agent→relay throughput syscall-bound
		// (docs/performance.md).
		HTTPClient:   &http.Client{Transport: batchWebSocketWrites(tr)},
		HTTPHeader:   header,
		Subprotocols: []string{Subprotocol},
	})
	if err != nil {
		cfg.Metrics.error("connect")
		return nil, dialError(relayURL, resp, err)
	}
	if ws.Subprotocol() != Subprotocol {
		ws.Close(websocket.StatusProtocolError, "subprotocol "+Subprotocol+" required")
		return nil, fmt.Errorf("tunnel: relay %s did not accept subprotocol %s: is it a clusterconnect relay of a compatible version?", relayURL, Subprotocol)
	}
	life, stop := context.WithCancel(context.Background())
	s, err := newSession(websocket.NetConn(life, ws, websocket.MessageBinary), stop, cfg, false)
	if err != nil {
		return nil, err
	}
	s.replica = resp.Header.Get(HeaderReplica)
	return s, nil
}

// HeaderReplica is the relay fleet's answer to the upgrade: which replica
// the agent reached, so that it can spread its tunnels over replicas.
const HeaderReplica = "X-Clusterconnect-Replica"

// RefusedError is returned by Dial when the relay answered the upgrade with an
// HTTP error; StatusCode tells an authentication failure (401, 403) from an
// unknown cluster (404) and others.
type RefusedError struct {
	URL        string
	StatusCode int
	Message    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("tunnel: relay %s refused the tunnel: HTTP %d: %s", e.URL, e.StatusCode, e.Message)
}

func dialError(u string, resp *http.Response, err error) error {
	if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return fmt.Errorf("tunnel: connect to relay %s: %w", u, err)
	}
	msg := http.StatusText(resp.StatusCode)
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		// The relay answers with a Kubernetes Status; show its message.
		var st struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			msg = st.Message
		} else if s := strings.TrimSpace(string(b)); s != "" {
			msg = s
		}
	}
	return &RefusedError{URL: u, StatusCode: resp.StatusCode, Message: msg}
}

// Defaults of a zero Backoff (SPEC.md §4, Reconnect).
const (
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 8 * time.Second
)

// Backoff is an exponential backoff with full jitter: before attempt n the
// wait is uniform in (0, min(Max, Min·2ⁿ)].
type Backoff struct {
	Min, Max time.Duration // zero: DefaultBackoffMin and DefaultBackoffMax
}

// Delay returns the wait before attempt number attempt, where attempt 0 is
// the first try (which a Client makes without waiting) and 1 the first retry.
func (b Backoff) Delay(attempt int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	ceil := hi
	if attempt < 32 && lo<<attempt > 0 && lo<<attempt < hi {
		ceil = lo << attempt
	}
	return time.Duration(rand.Int64N(int64(ceil)) + 1)
}

// ClientOptions configure an agent's set of tunnels.
type ClientOptions struct {
	// URL of the relay's agent endpoint for this cluster.
	URL string
	// Tunnels is how many parallel tunnels to keep; zero means 2.
	Tunnels int
	// Targets is the allow-list; it must not be empty.
	Targets Targets
	// Dial configures each tunnel's connection. Header may be replaced per
	// attempt by Credentials.
	Dial DialOptions
	// Credentials, when set, is called before every connection attempt and
	// its headers are added to the upgrade (so rotated credentials are used).
	Credentials func(ctx context.Context) (http.Header, error)
	// Backoff between reconnects.
	Backoff Backoff
	// DrainTimeout bounds how long streams in flight may finish on shutdown
	// or after a Refresh; zero means Dial.Config's DrainTimeout (itself
	// DefaultDrainTimeout when zero).
	DrainTimeout time.Duration
	// Logger; nil means discard.
	Logger *slog.Logger
	// SpreadAttempts bounds how often a tunnel that landed on the same relay
	// replica as another (behind one load balancer) is redialled, with
	// jitter, to reach a distinct one; zero means DefaultSpreadAttempts,
	// negative never.
	SpreadAttempts int
}

// DefaultSpreadAttempts is ClientOptions.SpreadAttempts when zero: behind
// a round-robin load balancer over three replicas, ten attempts all landing
// on the same replica again has odds of (1/3)¹⁰.
const DefaultSpreadAttempts = 10

// Client keeps an agent's tunnels to the relay connected, each on its own
// reconnect loop, and serves their streams.
type Client struct {
	opts  ClientOptions
	log   *slog.Logger
	delay func(attempt int) time.Duration // Backoff.Delay; tests record it

	mu       sync.Mutex
	sessions map[int]*Session
	refresh  []chan struct{} // one per tunnel loop
	recheck  []chan struct{} // one per tunnel loop: another tunnel moved; check spreading again
	drains   sync.WaitGroup  // old sessions draining after a refresh
}

// NewClient checks opts and returns a Client; Run starts it.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.URL == "" {
		return nil, errors.New("tunnel: relay URL is required")
	}
	if len(opts.Targets) == 0 {
		return nil, errors.New("tunnel: the allow-list (Targets) is empty; the agent would serve nothing")
	}
	if opts.Tunnels == 0 {
		opts.Tunnels = 2
	}
	if opts.Tunnels < 0 {
		return nil, fmt.Errorf("tunnel: tunnels must be at least 1, got %d", opts.Tunnels)
	}
	if err := opts.Dial.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = opts.Dial.Config.withDefaults().DrainTimeout
	}
	if opts.DrainTimeout < 0 {
		return nil, fmt.Errorf("tunnel: drain timeout must not be negative, got %s", opts.DrainTimeout)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SpreadAttempts == 0 {
		opts.SpreadAttempts = DefaultSpreadAttempts
	}
	c := &Client{opts: opts, log: opts.Logger, sessions: map[int]*Session{}, delay: opts.Backoff.Delay}
	for range opts.Tunnels {
		c.refresh = append(c.refresh, make(chan struct{}, 1))
		c.recheck = append(c.recheck, make(chan struct{}, 1))
	}
	return c, nil
}

// Refresh replaces every tunnel with a new connection, e.g. after the
// credentials rotated: each new tunnel is connected first, then the old one
// drains — the relay opens no new streams on it, and streams in flight run to
// their end — so no request fails and capacity never drops.
func (c *Client) Refresh() {
	for _, ch := range c.refresh {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Connected is the number of tunnels up now.
func (c *Client) Connected() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// Run keeps the tunnels connected until ctx is done, then drains them and
// returns.
func (c *Client) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range c.opts.Tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.loop(ctx, i)
		}()
	}
	wg.Wait()
	c.drains.Wait()
}

// Sessions returns the tunnels connected now (for tests and diagnostics).
func (c *Client) Sessions() []*Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		out = append(out, s)
	}
	return out
}

func (c *Client) loop(ctx context.Context, index int) {
	log := c.log.With("tunnel", index)
	var lastErr string
	for attempt := 0; ctx.Err() == nil; {
		if attempt > 0 {
			if m := c.opts.Dial.Config.metrics(); m != nil {
				m.Reconnects.Inc()
			}
			t := time.NewTimer(c.delay(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		s, err := c.connect(ctx, index)
		if err != nil {
			attempt++
			// One log line per change of error, not one per attempt.
			if msg := err.Error(); msg != lastErr {
				log.Warn("tunnel connect failed; retrying with backoff", "err", err)
				lastErr = msg
			}
			continue
		}
		attempt, lastErr = 1, ""
		log.Info("tunnel connected", "replica", s.Replica())
		c.mu.Lock()
		c.sessions[index] = s
		c.mu.Unlock()
		c.nudge(index)
		err = c.serve(ctx, index, s, log)
		c.mu.Lock()
		delete(c.sessions, index)
		c.mu.Unlock()
		if ctx.Err() != nil {
			log.Info("tunnel closed")
			return
		}
		log.Warn("tunnel lost; reconnecting", "err", err)
	}
}

// serve serves s until it ends; on a refresh it swaps in a new session and
// lets the old one drain in the background. It returns when the current
// session ends. It also swaps when the relay drains s (a replica going
// down: its go-away is the signal to move, and the new tunnel connects —
// through the load balancer, to another replica — while the streams in
// flight finish on the old one), and when s shares a relay replica with a
// tunnel of a lower index (to spread the tunnels over replicas).
func (c *Client) serve(ctx context.Context, index int, s *Session, log *slog.Logger) error {
	start := func(s *Session) (chan error, chan struct{}) {
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, c.opts.Targets, c.opts.DrainTimeout) }()
		drained := make(chan struct{})
		s.OnDrain(func() { close(drained) })
		return done, drained
	}
	done, drained := start(s)
	tries := 0
	var spread, move <-chan time.Time
	if s.Replica() != "" && c.opts.SpreadAttempts > 0 {
		// Checked when it fires: the other tunnels connect meanwhile.
		spread = time.After(c.spreadDelay(0))
	}
	moves := 0
	for {
		var why string
		select {
		case err := <-done:
			return err
		case <-c.refresh[index]:
			why = "refresh"
		case <-drained:
			drained = nil
			if ctx.Err() != nil {
				continue // the agent itself is draining
			}
			log.Info("the relay is draining this tunnel; connecting another first")
			move = time.After(0)
			continue
		case <-move:
			why = "move"
		case <-spread:
			if !c.crowded(index, s) {
				spread = nil
				continue
			}
			why = "spread"
		case <-c.recheck[index]:
			// Another tunnel connected or moved, maybe onto this one's
			// replica: a new situation, with attempts of its own.
			if spread == nil && s.Replica() != "" {
				tries = 0
				spread = time.After(c.spreadDelay(0))
			}
			continue
		}
		ns, err := c.connect(ctx, index)
		if err != nil {
			switch why {
			case "move":
				moves++
				move = time.After(c.delay(moves))
			case "spread":
				tries++
				spread = nil
				if tries < c.opts.SpreadAttempts {
					spread = time.After(c.spreadDelay(tries))
				}
			}
			log.Warn("tunnel "+why+" failed; keeping the current connection", "err", err)
			continue
		}
		switch why {
		case "spread":
			tries++
			if c.crowded(index, ns) {
				// The load balancer sent this one to the same replica
				// again: keep the current connection, try later.
				ns.Close()
				spread = nil
				if tries < c.opts.SpreadAttempts {
					spread = time.After(c.spreadDelay(tries))
				} else {
					log.Info("tunnels share a relay replica; giving up spreading them", "replica", s.Replica(), "attempts", tries)
				}
				continue
			}
			log.Info("tunnel moved to another relay replica", "from", s.Replica(), "to", ns.Replica(), "attempts", tries)
			spread = nil
		case "move":
			log.Info("tunnel moved off the draining relay replica", "from", s.Replica(), "to", ns.Replica())
		default:
			log.Info("tunnel refreshed; the previous connection drains")
		}
		// Whatever the reason, the new connection replaces the old one: a
		// pending move (off a draining replica) is moot.
		move, moves = nil, 0
		old, oldDone := s, done
		c.drains.Add(1)
		go func() {
			defer c.drains.Done()
			// Streams in flight finish on the old session, for at most the
			// drain timeout; the end of ctx does not cut that short, as it
			// does not for the current session's drain.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.DrainTimeout)
			defer cancel()
			if err := old.Shutdown(dctx); err != nil {
				log.Warn("tunnel drain after refresh incomplete", "err", err)
			}
			<-oldDone
		}()
		s = ns
		done, drained = start(ns)
		c.mu.Lock()
		c.sessions[index] = s
		c.mu.Unlock()
		c.nudge(index)
		if spread == nil && s.Replica() != "" && why != "spread" {
			// A moved or refreshed tunnel may have landed beside another.
			tries = 0
			spread = time.After(c.spreadDelay(0))
		}
	}
}

// nudge tells the other tunnels that tunnel index has a new connection.
func (c *Client) nudge(index int) {
	for i, ch := range c.recheck {
		if i == index {
			continue
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// crowded reports whether s reached a relay replica that a tunnel with a
// lower index holds too (so that of two tunnels on one replica, one moves).
func (c *Client) crowded(index int, s *Session) bool {
	if s.Replica() == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.sessions {
		if i < index && o.Replica() == s.Replica() {
			return true
		}
	}
	return false
}

// spreadDelay is the jittered wait before spread attempt n, uniform in
// (0.5 s, 0.5 s + min(4 s, 2ⁿ⁻¹ s)], so that agents behind one load balancer
// do not redial in step.
func (c *Client) spreadDelay(n int) time.Duration {
	return Backoff{Min: time.Second, Max: 8 * time.Second}.Delay(n)/2 + 500*time.Millisecond
}

func (c *Client) connect(ctx context.Context, index int) (*Session, error) {
	d := c.opts.Dial
	h := make(http.Header)
	for k, v := range d.Header {
		h[k] = v
	}
	if c.opts.Credentials != nil {
		extra, err := c.opts.Credentials(ctx)
		if err != nil {
			return nil, fmt.Errorf("tunnel: credentials: %w", err)
		}
		for k, v := range extra {
			h[k] = v
		}
	}
	h.Set(HeaderTunnelIndex, fmt.Sprint(index))
	d.Header = h
	cfg := d.Config.withDefaults()
	if d.Config == nil || d.Config.Logger == nil {
		cfg.Logger = c.log
	}
	cfg.Logger = cfg.Logger.With("tunnel", index)
	d.Config = &cfg
	return Dial(ctx, c.opts.URL, &d)
}

// HeaderTunnelIndex carries the agent's index of a tunnel (0..N-1) on the
// upgrade, so that logs on both ends can name it.
const HeaderTunnelIndex = "X-Tunnel-Index"

func (c *Config) metrics() *Metrics {
	if c == nil {
		return nil
	}
	return c.Metrics
}
