// Package audit keeps the relay's audit log: one api.AuditRecord per
// request admitted or refused on the data path, and a start and an end
// record per upgraded session (exec, attach, port-forward). Records are
// written as JSON lines to a Writer (a file, see OpenFile) and the newest
// are kept in memory for the management API's queries. Meter wraps a
// request's ResponseWriter to count its bytes, upgrades included.
//
// Writing never holds up a request: Record queues the line and returns;
// one goroutine at a time, started when there is something to write and
// gone when there is not, writes the queue in batches. The queue is
// bounded: while the Writer is stuck, records beyond Config.Buffer are not
// written (Dropped counts them) but are still kept in memory.
package audit

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// Defaults of Config.
const (
	DefaultKeep   = 10_000
	DefaultBuffer = 4096
)

// maxBatch bounds the bytes of one Write.
const maxBatch = 256 << 10

// Config wires a Log. The zero value keeps DefaultKeep records in memory
// and writes nothing.
type Config struct {
	// Writer receives one JSON line per record; nil means none. Writes are
	// serialised and batched (several lines per Write).
	Writer io.Writer
	// Keep is how many records are kept in memory for Query; zero means
	// DefaultKeep, negative none.
	Keep int
	// Buffer is how many records may wait for Writer; zero means
	// DefaultBuffer. Beyond it records are dropped from the Writer (not from
	// memory) and counted.
	Buffer int
	// Now stamps records recorded without a Time; nil means time.Now.
	Now func() time.Time
	// Logger receives write errors and drops, at most one a minute; nil
	// means discard.
	Logger *slog.Logger
}

// Log is an audit log, safe for concurrent use.
type Log struct {
	w      io.Writer
	buffer int
	now    func() time.Time
	log    *slog.Logger
	warn   rate.Sometimes

	errors, dropped atomic.Int64

	mu      sync.Mutex
	ring    []api.AuditRecord // the newest Keep records; next is the oldest once full
	next    int
	full    bool
	pending [][]byte      // lines waiting for w
	drained chan struct{} // closed when the writer goroutine exits; nil when none runs
}

// New returns a Log for cfg.
func New(cfg Config) *Log {
	if cfg.Keep == 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{w: cfg.Writer, buffer: cfg.Buffer, now: cfg.Now, log: cfg.Logger, warn: rate.Sometimes{First: 1, Interval: time.Minute}}
	if cfg.Keep > 0 {
		l.ring = make([]api.AuditRecord, 0, cfg.Keep)
	}
	return l
}

// Record adds rec (stamped with Now when its Time is zero) to the log. It
// does not wait for the Writer.
func (l *Log) Record(rec api.AuditRecord) {
	if rec.Time.IsZero() {
		rec.Time = l.now()
	}
	rec.Principal.Groups = slices.Clone(rec.Principal.Groups) // the caller may reuse its slice
	var line []byte
	if l.w != nil {
		b, err := json.Marshal(rec)
		if err != nil { // cannot happen: every field marshals
			l.errors.Add(1)
			return
		}
		line = append(b, '\n')
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cap(l.ring) > 0 {
		if !l.full {
			l.ring = append(l.ring, rec)
			l.full = len(l.ring) == cap(l.ring)
		} else {
			l.ring[l.next] = rec
			l.next = (l.next + 1) % len(l.ring)
		}
	}
	if line == nil {
		return
	}
	if len(l.pending) >= l.buffer {
		n := l.dropped.Add(1)
		l.warn.Do(func() { l.log.Warn("audit log writer is behind: records not written", "dropped_total", n) })
		return
	}
	l.pending = append(l.pending, line)
	if l.drained == nil {
		l.drained = make(chan struct{})
		go l.write(l.drained)
	}
}

// write writes the pending lines until there are none.
func (l *Log) write(done chan struct{}) {
	var batch []byte
	for {
		l.mu.Lock()
		n := 0
		batch = batch[:0]
		for n < len(l.pending) && (n == 0 || len(batch)+len(l.pending[n]) <= maxBatch) {
			batch = append(batch, l.pending[n]...)
			n++
		}
		if n == 0 {
			l.drained = nil
			l.pending = l.pending[:0]
			l.mu.Unlock()
			close(done)
			return
		}
		clear(l.pending[:n])
		l.pending = l.pending[n:]
		l.mu.Unlock()
		if _, err := l.w.Write(batch); err != nil {
			total := l.errors.Add(int64(n))
			l.warn.Do(func() { l.log.Warn("audit log write failed", "err", err, "records", n, "failed_total", total) })
		}
	}
}

// Flush waits until every record so far has been handed to the Writer, or
// ctx is done. Call it on shutdown before closing the Writer.
func (l *Log) Flush(ctx context.Context) error {
	l.mu.Lock()
	done := l.drained
	l.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Errors is the number of records the Writer failed to take.
func (l *Log) Errors() int64 { return l.errors.Load() }

// Dropped is the number of records not written because Buffer records were
// already waiting for the Writer.
func (l *Log) Dropped() int64 { return l.dropped.Load() }

// Filter selects records for Query. Zero fields match everything.
type Filter struct {
	// Cluster matches the record's cluster exactly.
	Cluster string
	// User matches the principal's ID or Name, ignoring case.
	User string
	// Since matches records at or after it.
	Since time.Time
	// Limit, when positive, keeps the newest Limit matches.
	Limit int
}

func (f *Filter) match(r *api.AuditRecord) bool {
	return (f.Cluster == "" || r.Cluster == f.Cluster) &&
		(f.User == "" || strings.EqualFold(r.Principal.ID, f.User) || strings.EqualFold(r.Principal.Name, f.User)) &&
		(f.Since.IsZero() || !r.Time.Before(f.Since))
}

// Query returns the kept records that match f, oldest first (in the order
// recorded); nil when none does.
func (l *Log) Query(f Filter) []api.AuditRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.AuditRecord
	// Newest first, so that Limit stops the walk; reversed at the end.
	for i := len(l.ring) - 1; i >= 0 && (f.Limit <= 0 || len(out) < f.Limit); i-- {
		r := &l.ring[(l.next+i)%len(l.ring)]
		if f.match(r) {
			rec := *r
			rec.Principal.Groups = slices.Clone(rec.Principal.Groups)
			out = append(out, rec)
		}
	}
	slices.Reverse(out)
	return out
}
