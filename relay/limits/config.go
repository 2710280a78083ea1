package limits

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"time"
)

// Config sets the limits. In every field zero means the default (Defaults)
// and a negative value means unlimited; a negative rate or burst turns that
// token bucket off.
type Config struct {
	// CallerRate is the sustained requests per second of one verified
	// caller, across all clusters; CallerBurst is its bucket's size.
	CallerRate  float64
	CallerBurst int
	// CallerConcurrent bounds one caller's short requests in flight;
	// CallerLongRunning its long-running ones (watch, exec, attach,
	// port-forward, logs -f), a separate budget so open streams cannot
	// starve short requests.
	CallerConcurrent  int
	CallerLongRunning int
	// The same for one cluster, across all its callers.
	ClusterRate        float64
	ClusterBurst       int
	ClusterConcurrent  int
	ClusterLongRunning int
	// IdleAfter is how long a caller's or cluster's state is kept after its
	// last request ended, once nothing is in flight and its bucket is full
	// again (then forgetting it loses nothing).
	IdleAfter time.Duration
}

// Defaults are limits that an ordinary kubectl or client-go workload, of
// 1 000 requests or any other size, never reaches:
//
//   - caller rate 100/s, burst 400: client-go's own limiter, which kubectl
//     uses, is QPS 50, burst 300 (discovery); the relay's bucket is larger
//     in both, so a default client is always throttled on its own side
//     first and never sees a 429 from the relay. A controller or a script
//     that raised its QPS to 100 still fits.
//   - caller 400 short requests in flight: covers kubectl's burst of 300
//     sent all at once (parallel discovery of a large cluster).
//   - caller 100 long-running: k9s, Lens or a controller run through the
//     relay open one watch per resource type, a few dozen.
//   - cluster rate 1000/s, burst 2000, 2000 short and 1000 long-running in
//     flight: ten callers at their full rate. These are a safety net for the
//     relay (each request in flight holds a tunnel stream and goroutines);
//     fairness among a cluster's callers is the API server's own
//     priority-and-fairness, which refuses far earlier (its default is 600
//     requests in flight), and a tunnel refuses streams above MaxStreams
//     (1024 by default) with 503 ClusterBusy.
//   - idle after 10 minutes: at 100/s a full bucket refills in 4 s, so
//     state is kept only for callers and clusters in recent use.
func Defaults() Config {
	return Config{
		CallerRate:         100,
		CallerBurst:        400,
		CallerConcurrent:   400,
		CallerLongRunning:  100,
		ClusterRate:        1000,
		ClusterBurst:       2000,
		ClusterConcurrent:  2000,
		ClusterLongRunning: 1000,
		IdleAfter:          10 * time.Minute,
	}
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	d := Defaults()
	fill := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.CallerRate == 0 {
		c.CallerRate = d.CallerRate
	}
	if c.ClusterRate == 0 {
		c.ClusterRate = d.ClusterRate
	}
	fill(&c.CallerBurst, d.CallerBurst)
	fill(&c.CallerConcurrent, d.CallerConcurrent)
	fill(&c.CallerLongRunning, d.CallerLongRunning)
	fill(&c.ClusterBurst, d.ClusterBurst)
	fill(&c.ClusterConcurrent, d.ClusterConcurrent)
	fill(&c.ClusterLongRunning, d.ClusterLongRunning)
	if c.IdleAfter <= 0 {
		c.IdleAfter = d.IdleAfter
	}
	return c
}

// Flags fills c's zero fields with the defaults and registers the limits on
// fs, with c's values as the flags' defaults.
func (c *Config) Flags(fs *flag.FlagSet) {
	*c = c.withDefaults()
	fs.Float64Var(&c.CallerRate, "limit-caller-rate", c.CallerRate, "requests per second one verified caller may send, across all clusters (token bucket; negative = unlimited)")
	fs.IntVar(&c.CallerBurst, "limit-caller-burst", c.CallerBurst, "requests one caller may send at once above --limit-caller-rate (bucket size; negative = no rate limit)")
	fs.IntVar(&c.CallerConcurrent, "limit-caller-concurrent", c.CallerConcurrent, "short requests one caller may have in flight (negative = unlimited)")
	fs.IntVar(&c.CallerLongRunning, "limit-caller-long-running", c.CallerLongRunning, "long-running requests (watch, exec, attach, port-forward, logs -f) one caller may have open (negative = unlimited)")
	fs.Float64Var(&c.ClusterRate, "limit-cluster-rate", c.ClusterRate, "requests per second to one cluster, all callers together (token bucket; negative = unlimited)")
	fs.IntVar(&c.ClusterBurst, "limit-cluster-burst", c.ClusterBurst, "requests to one cluster at once above --limit-cluster-rate (bucket size; negative = no rate limit)")
	fs.IntVar(&c.ClusterConcurrent, "limit-cluster-concurrent", c.ClusterConcurrent, "short requests in flight to one cluster, all callers together (negative = unlimited)")
	fs.IntVar(&c.ClusterLongRunning, "limit-cluster-long-running", c.ClusterLongRunning, "long-running requests open to one cluster, all callers together (negative = unlimited)")
	fs.DurationVar(&c.IdleAfter, "limit-idle-after", c.IdleAfter, "forget a caller's or cluster's limit state this long after its last request, once it is idle")
}

// Validate checks what the flags cannot: rates that are numbers and an
// IdleAfter that is not negative.
func (c *Config) Validate() error {
	var errs []error
	for _, r := range []struct {
		flag string
		v    float64
	}{{"--limit-caller-rate", c.CallerRate}, {"--limit-cluster-rate", c.ClusterRate}} {
		if math.IsNaN(r.v) || math.IsInf(r.v, 0) {
			errs = append(errs, fmt.Errorf("%s %v: want a number of requests per second (negative = unlimited)", r.flag, r.v))
		}
	}
	if c.IdleAfter < 0 {
		errs = append(errs, fmt.Errorf("--limit-idle-after %s: want a positive duration", c.IdleAfter))
	}
	return errors.Join(errs...)
}
