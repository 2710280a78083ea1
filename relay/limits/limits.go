// Package limits bounds what one verified caller, and one cluster across all
// its callers, may ask of the relay's data path: a token bucket of requests
// per second each (golang.org/x/time/rate), and counters of requests in
// flight, with long-running streams (watch, exec, attach, port-forward,
// logs -f) in a budget of their own so that open streams cannot starve short
// requests. A refused request takes nothing from any budget. State of idle
// callers and clusters is forgotten, so memory follows the recent working
// set, not everyone ever seen.
package limits

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
)

// ConcurrencyRetryAfter is the Retry-After of a refusal for too many
// requests in flight: when one will finish is not known.
const ConcurrencyRetryAfter = time.Second

// Refusal says why a request was not admitted. It is an error.
type Refusal struct {
	// Code is the HTTP status: 429.
	Code int
	// Reason is api.ReasonCallerLimited or api.ReasonClusterLimited.
	Reason string
	// RetryAfter is when to try again, whole seconds, at least 1 s: the
	// bucket's own delay for a rate limit.
	RetryAfter time.Duration
	// Message says which limit, its value, and what to do.
	Message string
}

func (r *Refusal) Error() string { return r.Message }

// Write answers the request with the refusal: a Kubernetes Status with
// Code and Reason, and a Retry-After header, which client-go honours.
func (r *Refusal) Write(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(r.RetryAfter/time.Second)))
	apistatus.Write(w, r.Code, metav1.StatusReason(r.Reason), r.Message)
}

// Limiter admits requests. Its zero value is not usable; call New.
type Limiter struct {
	idleAfter time.Duration
	now       func() time.Time
	refusals  *prometheus.CounterVec

	// mu orders every check and take of both scopes, so that a request
	// refused by the cluster's budget after passing the caller's takes
	// nothing from either, and counters cannot go wrong. It is held for
	// map look-ups and arithmetic only, and for a sweep every IdleAfter/2.
	mu        sync.Mutex
	caller    scope
	cluster   scope
	lastSweep time.Time
}

// scope is the limits of one kind of key (callers or clusters).
type scope struct {
	kind, reason string // "caller", api.ReasonCallerLimited
	rate         rate.Limit
	burst        int // 0: no bucket
	short, long  int // < 0: unlimited
	keys         map[string]*entry
}

type entry struct {
	bucket      *rate.Limiter // nil: no rate limit
	short, long int           // in flight
	seen        time.Time     // last admitted or released
}

// New returns a Limiter for cfg (zero fields are the defaults). reg receives
// the refusal counter, relay_limit_refusals_total{reason,limit}, and the
// gauge of remembered keys, relay_limit_keys{scope}; nil means none.
func New(cfg Config, reg prometheus.Registerer) *Limiter {
	cfg = cfg.withDefaults()
	l := &Limiter{
		idleAfter: cfg.IdleAfter,
		now:       time.Now,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "relay", Name: "limit_refusals_total",
			Help: "Requests refused by the relay's limits, by reason (CallerRateLimited, ClusterRateLimited) and limit (rate, concurrent, long_running).",
		}, []string{"reason", "limit"}),
		caller:  newScope("caller", api.ReasonCallerLimited, cfg.CallerRate, cfg.CallerBurst, cfg.CallerConcurrent, cfg.CallerLongRunning),
		cluster: newScope("cluster", api.ReasonClusterLimited, cfg.ClusterRate, cfg.ClusterBurst, cfg.ClusterConcurrent, cfg.ClusterLongRunning),
	}
	l.lastSweep = l.now()
	if reg != nil {
		reg.MustRegister(l.refusals)
		for _, s := range []*scope{&l.caller, &l.cluster} {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "relay", Name: "limit_keys",
				Help:        "Callers and clusters whose limit state the relay keeps (recently active).",
				ConstLabels: prometheus.Labels{"scope": s.kind},
			}, func() float64 {
				l.mu.Lock()
				defer l.mu.Unlock()
				return float64(len(s.keys))
			}))
		}
	}
	return l
}

func newScope(kind, reason string, r float64, burst, short, long int) scope {
	s := scope{kind: kind, reason: reason, rate: rate.Limit(r), burst: burst, short: short, long: long, keys: map[string]*entry{}}
	if r < 0 || burst < 0 {
		s.rate, s.burst = rate.Inf, 0
	}
	return s
}

func (s *scope) unlimited() bool { return s.burst == 0 && s.short < 0 && s.long < 0 }

// get returns key's entry, creating it; nil when the scope has no limits.
func (s *scope) get(key string, now time.Time) *entry {
	if s.unlimited() {
		return nil
	}
	e := s.keys[key]
	if e == nil {
		e = &entry{seen: now}
		if s.burst > 0 {
			e.bucket = rate.NewLimiter(s.rate, s.burst)
		}
		s.keys[key] = e
	}
	return e
}

// check refuses when key is over a limit, without taking anything.
func (s *scope) check(e *entry, key string, long bool, now time.Time) (r *Refusal, limit string) {
	if e == nil {
		return nil, ""
	}
	who := "this caller"
	if s.kind == "cluster" {
		who = "cluster " + key + ", all callers together,"
	}
	flag := "--limit-" + s.kind
	switch {
	case long && s.long >= 0 && e.long >= s.long:
		return s.refusal(ConcurrencyRetryAfter, fmt.Sprintf(
			"%s has %d long-running requests (watch, exec, attach, port-forward, logs -f) open, its limit; close one and retry (after %ds), or ask the relay operator to raise %s-long-running",
			who, e.long, secs(ConcurrencyRetryAfter), flag)), "long_running"
	case !long && s.short >= 0 && e.short >= s.short:
		return s.refusal(ConcurrencyRetryAfter, fmt.Sprintf(
			"%s has %d requests in flight, its limit; retry after %ds, or ask the relay operator to raise %s-concurrent",
			who, e.short, secs(ConcurrencyRetryAfter), flag)), "concurrent"
	}
	if e.bucket != nil {
		if tokens := e.bucket.TokensAt(now); tokens < 1 {
			d := time.Duration((1 - tokens) / float64(s.rate) * float64(time.Second))
			return s.refusal(d, fmt.Sprintf(
				"%s is over its limit of %g requests per second (burst %d); retry after %ds, or ask the relay operator to raise %s-rate",
				who, float64(s.rate), s.burst, secs(d), flag)), "rate"
		}
	}
	return nil, ""
}

func (s *scope) refusal(after time.Duration, msg string) *Refusal {
	return &Refusal{Code: http.StatusTooManyRequests, Reason: s.reason, RetryAfter: time.Duration(secs(after)) * time.Second, Message: msg}
}

// secs rounds d up to whole seconds, at least 1.
func secs(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// take admits a request that check let through.
func (e *entry) take(long bool, now time.Time) {
	if e == nil {
		return
	}
	if e.bucket != nil {
		e.bucket.AllowN(now, 1) // true: checked under the same lock
	}
	if long {
		e.long++
	} else {
		e.short++
	}
	e.seen = now
}

func (e *entry) put(long bool, now time.Time) {
	if e == nil {
		return
	}
	if long {
		e.long--
	} else {
		e.short--
	}
	e.seen = now
}

func noop() {}

// Admit asks to let one request of caller to cluster through. Admitted, it
// returns a release to call when the request is over (for an upgrade: when
// the upgraded connection closes); calling it again does nothing. Refused,
// it returns a no-op release and the refusal to send (Refusal.Write); the
// request has taken nothing from any budget. The caller's limits are
// checked first, so a caller over its own limit is told so even when the
// cluster is busy too.
func (l *Limiter) Admit(caller, cluster string, longRunning bool) (release func(), refusal *Refusal) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idleAfter/2 {
		l.sweep(now)
	}
	ce := l.caller.get(caller, now)
	ke := l.cluster.get(cluster, now)
	r, limit := l.caller.check(ce, caller, longRunning, now)
	if r == nil {
		r, limit = l.cluster.check(ke, cluster, longRunning, now)
	}
	if r != nil {
		l.refusals.WithLabelValues(r.Reason, limit).Inc()
		return noop, r
	}
	ce.take(longRunning, now)
	ke.take(longRunning, now)
	released := false
	return func() {
		now := l.now()
		l.mu.Lock()
		defer l.mu.Unlock()
		if released {
			return
		}
		released = true
		ce.put(longRunning, now)
		ke.put(longRunning, now)
	}, nil
}

// Sweep forgets the callers and clusters idle at now: nothing in flight, a
// full bucket, and no request for IdleAfter. Admit sweeps by itself every
// IdleAfter/2; Sweep is for tests and for a relay without traffic. It
// returns the number of keys forgotten.
func (l *Limiter) Sweep(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sweep(now)
}

func (l *Limiter) sweep(now time.Time) int {
	l.lastSweep = now
	n := 0
	for _, s := range []*scope{&l.caller, &l.cluster} {
		for k, e := range s.keys {
			if e.short == 0 && e.long == 0 && now.Sub(e.seen) >= l.idleAfter &&
				(e.bucket == nil || e.bucket.TokensAt(now) >= float64(s.burst)) {
				delete(s.keys, k)
				n++
			}
		}
	}
	return n
}

// InFlight reports the requests key has in flight, short and long-running;
// scope is "caller" or "cluster". For tests and debugging.
func (l *Limiter) InFlight(scope, key string) (short, long int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.caller
	if scope == "cluster" {
		s = &l.cluster
	}
	if e := s.keys[key]; e != nil {
		return e.short, e.long
	}
	return 0, 0
}

// Keys reports how many callers and clusters l remembers.
func (l *Limiter) Keys() (callers, clusters int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.caller.keys), len(l.cluster.keys)
}
