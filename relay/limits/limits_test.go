package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// unlimited is a Config with every limit off; tests turn on the ones they
// look at.
func unlimited() Config {
	return Config{CallerRate: -1, CallerBurst: -1, CallerConcurrent: -1, CallerLongRunning: -1,
		ClusterRate: -1, ClusterBurst: -1, ClusterConcurrent: -1, ClusterLongRunning: -1}
}

func admit(t *testing.T, l *Limiter, caller, cluster string, long bool) func() {
	t.Helper()
	release, r := l.Admit(caller, cluster, long)
	if r != nil {
		t.Fatalf("Admit(%s, %s, long=%v) refused: %s", caller, cluster, long, r.Message)
	}
	return release
}

func refuse(t *testing.T, l *Limiter, caller, cluster string, long bool, reason, flag string) *Refusal {
	t.Helper()
	release, r := l.Admit(caller, cluster, long)
	if r == nil {
		release()
		t.Fatalf("Admit(%s, %s, long=%v) admitted; want a refusal (%s)", caller, cluster, long, reason)
	}
	if r.Code != http.StatusTooManyRequests || r.Reason != reason || r.RetryAfter < time.Second || r.RetryAfter%time.Second != 0 {
		t.Errorf("refusal = %+v; want 429 %s, Retry-After whole seconds ≥ 1s", r, reason)
	}
	if !strings.Contains(r.Message, flag) {
		t.Errorf("refusal message %q does not name %s", r.Message, flag)
	}
	release() // a no-op, and must not unbalance anything
	return r
}

func TestCallerRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unlimited()
		cfg.CallerRate, cfg.CallerBurst = 0.5, 3
		l := New(cfg, nil)
		for range 3 {
			admit(t, l, "alice", "prod", false)()
		}
		r := refuse(t, l, "alice", "prod", false, api.ReasonCallerLimited, "--limit-caller-rate")
		// The bucket is empty: the next token comes in 1/0.5 s.
		if r.RetryAfter != 2*time.Second || !strings.Contains(r.Message, "retry after 2s") || !strings.Contains(r.Message, "0.5 requests per second (burst 3)") {
			t.Errorf("refusal = %+v; want Retry-After 2s and the limit in the message", r)
		}
		// Another caller on the same cluster has a bucket of its own.
		admit(t, l, "bob", "prod", false)()
		// Long-running requests take tokens too.
		refuse(t, l, "alice", "other", true, api.ReasonCallerLimited, "--limit-caller-rate")

		time.Sleep(r.RetryAfter)
		admit(t, l, "alice", "prod", false)()
		refuse(t, l, "alice", "prod", false, api.ReasonCallerLimited, "--limit-caller-rate")
	})
}

func TestRetryAfterRoundsUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unlimited()
		cfg.ClusterRate, cfg.ClusterBurst = 0.4, 1 // a token every 2.5 s
		l := New(cfg, nil)
		admit(t, l, "a", "c", false)()
		time.Sleep(time.Second) // 1.5 s to go
		if r := refuse(t, l, "a", "c", false, api.ReasonClusterLimited, "--limit-cluster-rate"); r.RetryAfter != 2*time.Second {
			t.Errorf("RetryAfter = %s, want 2s (1.5 s rounded up)", r.RetryAfter)
		}
		time.Sleep(1499 * time.Millisecond) // 1 ms to go
		if r := refuse(t, l, "a", "c", false, api.ReasonClusterLimited, "--limit-cluster-rate"); r.RetryAfter != time.Second {
			t.Errorf("RetryAfter = %s, want 1s, the least", r.RetryAfter)
		}
	})
}

func TestClusterLimitAcrossCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unlimited()
		cfg.ClusterRate, cfg.ClusterBurst = 1, 3
		l := New(cfg, nil)
		for _, c := range []string{"a", "b", "c"} {
			admit(t, l, c, "prod", false)()
		}
		r := refuse(t, l, "d", "prod", false, api.ReasonClusterLimited, "--limit-cluster-rate")
		if !strings.Contains(r.Message, "cluster prod") {
			t.Errorf("message %q does not name the cluster", r.Message)
		}
		admit(t, l, "d", "staging", false)()
	})
}

// A request the cluster refuses takes no token from its caller, and one
// refused for concurrency takes no token at all.
func TestRefusalTakesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unlimited()
		cfg.CallerRate, cfg.CallerBurst = 0.001, 2
		cfg.ClusterRate, cfg.ClusterBurst = 0.001, 1
		l := New(cfg, nil)
		admit(t, l, "a", "c1", false)()
		refuse(t, l, "a", "c1", false, api.ReasonClusterLimited, "--limit-cluster-rate")
		admit(t, l, "a", "c2", false)() // the caller's second token is still there
		refuse(t, l, "a", "c3", false, api.ReasonCallerLimited, "--limit-caller-rate")

		cfg = unlimited()
		cfg.CallerRate, cfg.CallerBurst, cfg.CallerConcurrent = 0.001, 2, 1
		l = New(cfg, nil)
		release := admit(t, l, "a", "c", false)
		refuse(t, l, "a", "c", false, api.ReasonCallerLimited, "--limit-caller-concurrent")
		release()
		admit(t, l, "a", "c", false)() // the second token
		refuse(t, l, "a", "c", false, api.ReasonCallerLimited, "--limit-caller-rate")
	})
}

func TestLongRunningBudget(t *testing.T) {
	for _, scope := range []string{"caller", "cluster"} {
		t.Run(scope, func(t *testing.T) {
			cfg := unlimited()
			reason := api.ReasonCallerLimited
			if scope == "caller" {
				cfg.CallerConcurrent, cfg.CallerLongRunning = 1, 2
			} else {
				cfg.ClusterConcurrent, cfg.ClusterLongRunning = 1, 2
				reason = api.ReasonClusterLimited
			}
			l := New(cfg, nil)
			w1 := admit(t, l, "a", "c", true)
			w2 := admit(t, l, "a", "c", true)
			refuse(t, l, "a", "c", true, reason, "--limit-"+scope+"-long-running")
			// Open watches do not block a short request.
			get := admit(t, l, "a", "c", false)
			refuse(t, l, "a", "c", false, reason, "--limit-"+scope+"-concurrent")
			// ... nor does a full short budget block a watch.
			w1()
			w3 := admit(t, l, "a", "c", true)
			get()
			admit(t, l, "a", "c", false)()
			w2()
			w3()
			for _, s := range []string{"caller", "cluster"} {
				k := "a"
				if s == "cluster" {
					k = "c"
				}
				if short, long := l.InFlight(s, k); short != 0 || long != 0 {
					t.Errorf("%s in flight after all releases: %d short, %d long", s, short, long)
				}
			}
		})
	}
}

func TestReleaseTwice(t *testing.T) {
	cfg := unlimited()
	cfg.CallerConcurrent = 1
	l := New(cfg, nil)
	r1 := admit(t, l, "a", "c", false)
	r1()
	r2 := admit(t, l, "a", "c", false)
	r1() // must not free r2's slot
	refuse(t, l, "a", "c", false, api.ReasonCallerLimited, "--limit-caller-concurrent")
	r2()
	if short, long := l.InFlight("caller", "a"); short != 0 || long != 0 {
		t.Errorf("in flight = %d, %d; want 0, 0", short, long)
	}
}

func TestUnlimited(t *testing.T) {
	l := New(unlimited(), nil)
	for range 10_000 {
		defer admit(t, l, "a", "c", false)()
	}
	if callers, clusters := l.Keys(); callers != 0 || clusters != 0 {
		t.Errorf("unlimited scopes keep state: %d callers, %d clusters", callers, clusters)
	}
}

func TestSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Defaults()
		cfg.IdleAfter = 10 * time.Minute
		l := New(cfg, nil)
		admit(t, l, "idle", "c1", false)()
		held := admit(t, l, "busy", "c2", true) // in flight all along
		time.Sleep(cfg.IdleAfter - time.Second)
		if n := l.Sweep(time.Now()); n != 0 {
			t.Errorf("swept %d keys used %s ago, less than IdleAfter", n, cfg.IdleAfter-time.Second)
		}
		time.Sleep(time.Second)
		if n := l.Sweep(time.Now()); n != 2 {
			t.Errorf("swept %d keys, want 2 (caller idle, cluster c1)", n)
		}
		if callers, clusters := l.Keys(); callers != 1 || clusters != 1 {
			t.Errorf("kept %d callers, %d clusters; want the busy ones", callers, clusters)
		}
		held()
		// Admit sweeps by itself every IdleAfter/2.
		time.Sleep(cfg.IdleAfter)
		admit(t, l, "new", "c3", false)()
		if callers, clusters := l.Keys(); callers != 1 || clusters != 1 {
			t.Errorf("after Admit's sweep: %d callers, %d clusters; want only the new ones", callers, clusters)
		}
	})
}

// A key whose bucket is not full again keeps its state: forgetting it would
// hand the caller a full bucket.
func TestSweepKeepsEmptyBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := unlimited()
		cfg.CallerRate, cfg.CallerBurst, cfg.IdleAfter = 1.0/3600, 1, time.Minute
		l := New(cfg, nil)
		admit(t, l, "a", "c", false)()
		time.Sleep(time.Hour / 2)
		if n := l.Sweep(time.Now()); n != 0 {
			t.Errorf("swept a key with an empty bucket")
		}
		refuse(t, l, "a", "c", false, api.ReasonCallerLimited, "--limit-caller-rate")
		time.Sleep(time.Hour)
		if n := l.Sweep(time.Now()); n != 1 {
			t.Errorf("swept %d keys, want 1 once the bucket is full", n)
		}
	})
}

func TestConcurrentAdmit(t *testing.T) {
	cfg := unlimited()
	cfg.CallerConcurrent, cfg.CallerLongRunning = 3, 2
	cfg.ClusterConcurrent, cfg.ClusterLongRunning = 5, 3
	cfg.CallerRate, cfg.CallerBurst = 1e6, 1000
	l := New(cfg, prometheus.NewRegistry())
	callers := []string{"a", "b", "c", "d"}
	// Each goroutine holds up to 20 requests, more than the limits admit at
	// once (16 over both clusters), so that some are refused.
	const window = 20
	var inFlight [2][2]atomic.Int64 // [cluster][long]
	var admitted, refused atomic.Int64
	type held struct {
		release       func()
		cluster, long int
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			var hs []held
			drop := func() {
				h := hs[0]
				hs = hs[1:]
				inFlight[h.cluster][h.long].Add(-1)
				h.release()
				h.release()
			}
			for range 2000 {
				caller, cluster, long := callers[rnd.IntN(len(callers))], rnd.IntN(2), rnd.IntN(3) == 0
				release, r := l.Admit(caller, fmt.Sprint(cluster), long)
				if r != nil {
					refused.Add(1)
					if len(hs) > 0 {
						drop()
					}
					continue
				}
				admitted.Add(1)
				li, limit := 0, int64(cfg.ClusterConcurrent)
				if long {
					li, limit = 1, int64(cfg.ClusterLongRunning)
				}
				if n := inFlight[cluster][li].Add(1); n > limit {
					t.Errorf("cluster %d has %d requests (long=%v) in flight, over its limit %d", cluster, n, long, limit)
				}
				hs = append(hs, held{release, cluster, li})
				if len(hs) == window {
					drop()
				}
			}
			for len(hs) > 0 {
				drop()
			}
		})
	}
	wg.Wait()
	if admitted.Load() == 0 || refused.Load() == 0 {
		t.Errorf("admitted %d, refused %d: want both", admitted.Load(), refused.Load())
	}
	for _, k := range callers {
		if s, lr := l.InFlight("caller", k); s != 0 || lr != 0 {
			t.Errorf("caller %s: %d, %d in flight after all releases", k, s, lr)
		}
	}
	for _, k := range []string{"0", "1"} {
		if s, lr := l.InFlight("cluster", k); s != 0 || lr != 0 {
			t.Errorf("cluster %s: %d, %d in flight after all releases", k, s, lr)
		}
	}
}

// The defaults never refuse a client-go/kubectl client with its own default
// limiter (QPS 50, burst 300), here 1 000 requests of a second each, sent
// as fast as that limiter lets them (up to 350 in flight).
func TestDefaultsFitKubectl(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Config{}, nil)
		client := rate.NewLimiter(50, 300)
		var refusals atomic.Int64
		var wg sync.WaitGroup
		for range 1000 {
			if err := client.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				release, r := l.Admit("user:kubectl", "prod", false)
				if r != nil {
					refusals.Add(1)
					return
				}
				time.Sleep(time.Second)
				release()
			})
		}
		wg.Wait()
		if n := refusals.Load(); n != 0 {
			t.Errorf("the defaults refused %d of 1000 requests of a default kubectl", n)
		}
	})
}

func TestRefusalMetric(t *testing.T) {
	cfg := unlimited()
	cfg.CallerLongRunning = 0 // the default, 100
	cfg.ClusterConcurrent = 1
	reg := prometheus.NewRegistry()
	l := New(cfg, reg)
	release := admit(t, l, "a", "c", false)
	defer release()
	refuse(t, l, "b", "c", false, api.ReasonClusterLimited, "--limit-cluster-concurrent")
	refuse(t, l, "b", "c", false, api.ReasonClusterLimited, "--limit-cluster-concurrent")
	if got := testutil.ToFloat64(l.refusals.WithLabelValues(api.ReasonClusterLimited, "concurrent")); got != 2 {
		t.Errorf("relay_limit_refusals_total{ClusterRateLimited,concurrent} = %v, want 2", got)
	}
	want := `
# HELP relay_limit_keys Callers and clusters whose limit state the relay keeps (recently active).
# TYPE relay_limit_keys gauge
relay_limit_keys{scope="caller"} 2
relay_limit_keys{scope="cluster"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "relay_limit_keys"); err != nil {
		t.Error(err)
	}
}

func TestRefusalWrite(t *testing.T) {
	r := &Refusal{Code: http.StatusTooManyRequests, Reason: api.ReasonCallerLimited, RetryAfter: 3 * time.Second, Message: "slow down"}
	rec := httptest.NewRecorder()
	r.Write(rec)
	var st api.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "3" || st.Kind != "Status" || st.Reason != api.ReasonCallerLimited || st.Code != 429 || st.Message != "slow down" {
		t.Errorf("wrote %d Retry-After %q %+v", rec.Code, rec.Header().Get("Retry-After"), st)
	}
	var err error = r
	if err.Error() != "slow down" {
		t.Errorf("Error() = %q", err.Error())
	}
}
