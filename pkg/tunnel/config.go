package tunnel

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/yamux"
)

// Subprotocol is the WebSocket subprotocol both ends must negotiate.
const Subprotocol = "clusterconnect.tunnel.v1"

// Defaults for Config's zero values. They are chosen so that one stream can
// fill a fast link (see docs/performance.md) while a stalled reader pins at
// most StreamWindow bytes per stream.
const (
	DefaultStreamWindow      = 4 << 20
	DefaultMaxStreams        = 1024
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveTimeout  = 10 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultCloseTimeout      = 10 * time.Second
)

// acceptBacklog bounds a session's streams opened and not yet acknowledged.
const acceptBacklog = 256

// Config tunes a tunnel session. A nil *Config, or any zero field, means the
// default named beside the field. Both ends may use different values.
type Config struct {
	// StreamWindow is the most a stream buffers for a reader that has not
	// caught up (bytes). Zero means DefaultStreamWindow; the minimum is
	// 256 KiB, yamux's initial window.
	StreamWindow uint32
	// MaxStreams caps the streams open at once on one session. Zero means
	// DefaultMaxStreams.
	MaxStreams int
	// KeepAliveInterval is how often a ping is sent; zero means
	// DefaultKeepAliveInterval.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long a ping or a frame write may take before the
	// peer is declared dead and the session closed; zero means
	// DefaultKeepAliveTimeout.
	KeepAliveTimeout time.Duration
	// DialTimeout bounds opening a stream: header, agent's dial of its
	// upstream and reply, when the context has no earlier deadline. The agent
	// gives its upstream dial four fifths of it (see dialBudget), so its
	// dial_failed reply arrives before the relay gives up. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// CloseTimeout is how long a stream this side closed waits for the
	// peer's close before it is reset, so an upstream that ignores the end
	// of its request cannot pin a stream and its window. Zero means
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// DrainTimeout bounds how long an agent's Serve lets streams in flight
	// finish once its context is done (and a Client's drain of a replaced
	// tunnel); the drain ends earlier when the last stream does. The relay
	// bounds its drain with the context it passes to Shutdown instead. Zero
	// means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Logger receives session events. Nil means discard.
	Logger *slog.Logger
	// Metrics, when set, is updated by the session. Nil means none.
	Metrics *Metrics
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.StreamWindow == 0 {
		out.StreamWindow = DefaultStreamWindow
	}
	if out.MaxStreams == 0 {
		out.MaxStreams = DefaultMaxStreams
	}
	if out.KeepAliveInterval == 0 {
		out.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if out.KeepAliveTimeout == 0 {
		out.KeepAliveTimeout = DefaultKeepAliveTimeout
	}
	if out.DialTimeout == 0 {
		out.DialTimeout = DefaultDialTimeout
	}
	if out.CloseTimeout == 0 {
		out.CloseTimeout = DefaultCloseTimeout
	}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = DefaultDrainTimeout
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// Validate reports a setting that cannot work.
func (c *Config) Validate() error {
	d := c.withDefaults()
	if d.StreamWindow < 256<<10 {
		return fmt.Errorf("tunnel: stream window %d is below the 256 KiB minimum", d.StreamWindow)
	}
	if d.MaxStreams < 1 {
		return fmt.Errorf("tunnel: max streams %d must be at least 1", d.MaxStreams)
	}
	if d.KeepAliveInterval < 0 || d.KeepAliveTimeout < 0 || d.DialTimeout < 0 || d.CloseTimeout < 0 || d.DrainTimeout < 0 {
		return fmt.Errorf("tunnel: durations must not be negative")
	}
	return nil
}

func (c *Config) yamux() *yamux.Config {
	y := yamux.DefaultConfig()
	// The backlog sizes two channels of every session: the streams opened
	// and not yet acknowledged (the opener waits beyond it) and the streams
	// arrived and not yet accepted. Serve accepts at once, and a peer with
	// the same backlog never has more unacknowledged, so yamux's 256 is
	// enough; MaxStreams (1024) cost 8 KiB per session on each side.
	y.AcceptBacklog = min(c.MaxStreams, acceptBacklog)
	// Session.keepalive pings on a runtime timer instead of yamux's
	// goroutine per session.
	y.EnableKeepAlive = false
	y.KeepAliveInterval = c.KeepAliveInterval
	y.ConnectionWriteTimeout = c.KeepAliveTimeout
	y.MaxStreamWindowSize = c.StreamWindow
	y.StreamOpenTimeout = c.DialTimeout + c.KeepAliveTimeout
	y.StreamCloseTimeout = c.CloseTimeout
	y.LogOutput = nil
	y.Logger = yamuxLogger{c.Logger}
	return y
}

// yamuxLogger adapts yamux's printf logging to slog at debug level: yamux
// logs every reset stream, which would flood an info log on the hot path.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any)                 { y.l.Debug(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.l.Debug(fmt.Sprintf(format, v...)) }
func (y yamuxLogger) Println(v ...any)               { y.l.Debug(fmt.Sprint(v...)) }

// WithLogger returns a copy of c (nil: defaults) that logs to l.
func (c *Config) WithLogger(l *slog.Logger) *Config {
	var out Config
	if c != nil {
		out = *c
	}
	out.Logger = l
	return &out
}

// WithMetrics returns a copy of c (nil: defaults) that updates m.
func (c *Config) WithMetrics(m *Metrics) *Config {
	var out Config
	if c != nil {
		out = *c
	}
	out.Metrics = m
	return &out
}

// dialBudget is how long the agent's upstream dial may take of a stream's
// DialTimeout: four fifths, leaving the rest (at most 2 s) for the reply to
// reach the relay, whose wait started earlier.
func dialBudget(open time.Duration) time.Duration {
	return open - min(open/5, 2*time.Second)
}
