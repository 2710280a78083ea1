package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
)

var (
	report  = flag.Bool("report", false, "run the full side-by-side harness (make bench): print the table, write results/")
	runs    = flag.Int("runs", 3, "runs per figure; the table shows medians")
	size    = flag.Int64("size", 1<<30, "bytes moved per throughput figure")
	idleMax = flag.Int("idle", 10000, "largest number of simulated idle agents")
	outDir  = flag.String("out", "results", "where -report writes latest.json and latest.md")
	storm   = flag.Int("storm", 10000, "agents in the reconnect storm (0: none)")
	profDir = flag.String("profile", "", "write CPU and allocation profiles per contender and measure here (make bench PROFILE=1)")
)

// tunedConfig is the "tuned" tunnel setting measured beside the defaults.
var tunedConfig = &tunnel.Config{StreamWindow: 16 << 20}

// Row is one contender's figures: medians over the runs.
type Row struct {
	Contender, Level, Note string
	UpMBps, DownMBps       float64
	Down16MBps, Down64MBps float64
	CPUUp, CPUDown         float64 // CPU seconds per GiB, one stream
	// Ratios computed within each run, then the median.
	UpVsTLS, DownVsTLS float64
	UpVsRD, DownVsRD   float64
	Small, KiB, List   latency // p50/p99 µs: a 1-byte echo (stream) or GETs (http)
	AddedP50us         float64 // small p50 over the direct one of the same level
	SetupPerSec        float64 // streams (stream) or requests (http) per second
	HOLCost            float64 // share lost by 4 healthy streams while one stalls; NaN: not applicable
	// The fleet's forwarded row: its throughput over the owner's direct
	// path's, in the same run.
	UpVsOwner, DownVsOwner float64
	// Error is why a figure of the row is missing (the run went on).
	Error string `json:",omitempty"`
}

// Report is what results/latest.json holds.
type Report struct {
	Machine  map[string]string
	Settings map[string]string
	Rows     []Row
	Sweep    []Row // the tunnel (batched agent) per stream window, one stream
	Idle     []IdleResult
	Storm    []StormResult
	Skipped  []string // contenders that could not start, and why
	Runs     [][]Row  // every run's raw figures
}

type opts struct {
	runs       int
	size       int64
	iters      int           // latency samples
	setup      time.Duration // how long a rate is measured
	idle       []int         // simulated agent counts
	idleSt     int           // idle streams
	sweep      []uint32      // windows
	holStream  int64
	fleet      bool   // the fleet's forwarded path (real etcd)
	storm      int    // agents in the reconnect storm; 0: none
	profileDir string // "": no profiles
}

func TestReport(t *testing.T) {
	if !*report {
		t.Skip("the full harness runs with -report (make bench)")
	}
	o := opts{runs: *runs, size: *size, iters: 2000, setup: 2 * time.Second, idleSt: 1000,
		sweep: []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20}, holStream: *size / 4, fleet: true, storm: *storm}
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			t.Fatal(err)
		}
		o.profileDir = *profDir
		// The idle hosts write heap profiles there too.
		os.Setenv("BENCH_PROFILE_DIR", *profDir)
	}
	for _, n := range []int{1000, 10000} {
		if n <= *idleMax {
			o.idle = append(o.idle, n)
		}
	}
	rep := run(t, o)
	md := markdown(rep)
	fmt.Println(md)
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*outDir, "latest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*outDir, "latest.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSmoke runs every contender and every measure once at a tiny size: it
// proves the harness works and asserts nothing about speed.
func TestSmoke(t *testing.T) {
	if *report {
		t.Skip("-report runs the full harness instead")
	}
	o := opts{runs: 1, size: 4 << 20, iters: 20, setup: 50 * time.Millisecond, idle: []int{20}, idleSt: 20,
		sweep: []uint32{256 << 10}, holStream: 1 << 20, fleet: true, storm: 20}
	rep := run(t, o)
	md := markdown(rep)
	t.Log("\n" + md)
	// The harness must run every contender and every measure: what the
	// full run reports as a note (a contender that could not start, a
	// figure that failed, a count not reached) fails here.
	for _, s := range rep.Skipped {
		t.Errorf("skipped: %s", s)
	}
	if len(rep.Rows) != len(rep.Runs[0]) || len(rep.Idle) != 4 || len(rep.Storm) != 2 || len(rep.Sweep) != 1 {
		t.Fatalf("incomplete report: %d rows, %d idle results, %d storms, %d windows", len(rep.Rows), len(rep.Idle), len(rep.Storm), len(rep.Sweep))
	}
	for _, r := range rep.Rows {
		if r.Error != "" || !(r.DownMBps > 0) || !(r.UpMBps > 0) || !(r.Small.P50us > 0) || !(r.SetupPerSec > 0) {
			t.Errorf("%s (%s): a figure is missing: %+v", r.Contender, r.Level, r)
		}
	}
	for _, r := range rep.Sweep {
		if r.Error != "" || !(r.DownMBps > 0) || !(r.UpMBps > 0) {
			t.Errorf("%s: a figure is missing: %+v", r.Contender, r)
		}
	}
	for _, r := range rep.Idle {
		if r.Reached < r.N || !(r.RelayGoroutines >= 0) || !(r.AgentGoroutines >= 0) {
			t.Errorf("idle %s ×%d: %+v", r.Contender, r.N, r)
		}
	}
	for _, r := range rep.Storm {
		if r.Reached < r.N {
			t.Errorf("storm %s: %+v", r.Contender, r)
		}
	}
}

func machine() map[string]string {
	m := map[string]string{
		"cores": fmt.Sprint(runtime.NumCPU()), "GOMAXPROCS": fmt.Sprint(runtime.GOMAXPROCS(0)),
		"go": runtime.Version(), "os/arch": runtime.GOOS + "/" + runtime.GOARCH, "GOGC": os.Getenv("GOGC"),
		"date": time.Now().UTC().Format(time.RFC3339),
	}
	if m["GOGC"] == "" {
		m["GOGC"] = "100 (default)"
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}

// failure carries a setup or measurement error out of run (see must).
type failure struct{ err error }

// must returns v, or ends run with err: run's deferred closes still run, and
// run reports err through t.
func must[T any](v T, err error) T {
	if err != nil {
		panic(failure{err})
	}
	return v
}

// attempt runs f, which ends early through must; the error it ended with, if
// any, is returned instead of ending the whole run.
func attempt(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fl, ok := r.(failure)
			if !ok {
				panic(r)
			}
			err = fl.err
		}
	}()
	f()
	return nil
}

// newRow is a row whose every figure is "not measured" until it is.
func newRow(name, level, note string) Row {
	n := math.NaN()
	return Row{Contender: name, Level: level, Note: note, UpMBps: n, DownMBps: n, Down16MBps: n, Down64MBps: n,
		CPUUp: n, CPUDown: n, UpVsTLS: n, DownVsTLS: n, UpVsRD: n, DownVsRD: n, Small: latency{n, n}, KiB: latency{n, n},
		List: latency{n, n}, AddedP50us: n, SetupPerSec: n, HOLCost: n, UpVsOwner: n, DownVsOwner: n}
}

func run(t *testing.T, o opts) (rep *Report) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(failure)
			if !ok {
				panic(r)
			}
			t.Fatal(f.err)
		}
	}()
	p := must(newPKI())
	defer p.remove()
	u := must(startUpstreams(p.cert))
	defer u.Close()
	ctx := context.Background()
	rep = &Report{Machine: machine(), Settings: map[string]string{
		"runs": fmt.Sprint(o.runs), "bytes per throughput figure": fmt.Sprint(o.size),
		"latency samples": fmt.Sprint(o.iters), "remotedialer": remotedialerVersion,
		"tls": "TLS 1.3, ECDSA P-256, loopback", "client side HTTP": "HTTP/2 (as kubectl)",
	}}
	// A contender that cannot start is reported, not the end of the run.
	var streams []*streamPath
	addStream := func(name string, f func() (*streamPath, error)) {
		sp, err := f()
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s (stream): could not start: %v", name, err))
			return
		}
		streams = append(streams, sp)
	}
	addStream("direct TCP", func() (*streamPath, error) { return directTCP(u), nil })
	addStream("direct TLS", func() (*streamPath, error) { return directTLS(u, p), nil })
	addStream("tunnel, defaults", func() (*streamPath, error) {
		return tunnelAlone("tunnel, defaults", "pkg/tunnel as shipped: coder/websocket agent, 4 MiB window", u, p, agentDial, nil)
	})
	addStream("tunnel, batched agent writes", func() (*streamPath, error) {
		return tunnelAlone("tunnel, batched agent writes", "tunneltest.BatchWebSocketWrites under the agent's coder/websocket", u, p, agentBatched, nil)
	})
	addStream("tunnel, batched + 16 MiB window", func() (*streamPath, error) {
		return tunnelAlone("tunnel, batched + 16 MiB window", "batched agent writes, StreamWindow 16 MiB", u, p, agentBatched, tunedConfig)
	})
	addStream("tunnel, gorilla agent", func() (*streamPath, error) {
		return tunnelAlone("tunnel, gorilla agent", "agent on gorilla/websocket (64 KiB write buffer), relay on coder", u, p, agentGorilla, nil)
	})
	addStream("smux", func() (*streamPath, error) { return smuxAlone(u, p) })
	addStream("http2", func() (*streamPath, error) { return h2Alone(u, p) })
	addStream("remotedialer", func() (*streamPath, error) { return remotedialerAlone(u, p) })
	defer func() {
		for _, s := range streams {
			s.close()
		}
	}()
	var https []*httpPath
	addHTTP := func(name string, f func() (*httpPath, error)) {
		hp, err := f()
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s (http): could not start: %v", name, err))
			return
		}
		https = append(https, hp)
	}
	addHTTP("direct HTTPS", func() (*httpPath, error) { return directHTTPS(u, p), nil })
	addHTTP("full path, defaults", func() (*httpPath, error) {
		return fullPath("full path, defaults", "relay.Server + clusteragent/connect, defaults", u, p, agentDial, nil)
	})
	addHTTP("full path, 16 MiB window", func() (*httpPath, error) {
		return fullPath("full path, 16 MiB window", "relay.Server + clusteragent/connect, StreamWindow 16 MiB", u, p, agentDial, tunedConfig)
	})
	addHTTP("full path, batched + 16 MiB", func() (*httpPath, error) {
		return fullPath("full path, batched + 16 MiB", "relay.Server + agent with batched writes (Dial + BatchWebSocketWrites), 16 MiB", u, p, agentBatched, tunedConfig)
	})
	if o.fleet {
		addHTTP("fleet", func() (*httpPath, error) {
			owner, forwarded, err := fleetPaths(u, p)
			if err == nil {
				https = append(https, owner)
			}
			return forwarded, err
		})
	}
	addHTTP("remotedialer", func() (*httpPath, error) { return remotedialerFull(u, p) })
	defer func() {
		for _, h := range https {
			h.close()
		}
	}()

	for r := range o.runs {
		var rows []Row
		for _, sp := range streams {
			row := newRow(sp.name, "stream", sp.note)
			if err := attempt(func() {
				prof := o.profiler(sp.name)
				up := must(profiled(prof, "up", func() (throughput, error) { return streamThroughput(ctx, sp, opSink, 1, o.size) }))
				down := must(profiled(prof, "down", func() (throughput, error) { return streamThroughput(ctx, sp, opSource, 1, o.size) }))
				row.UpMBps, row.CPUUp, row.DownMBps, row.CPUDown = up.MBps, up.CPUPerGiB, down.MBps, down.CPUPerGiB
				row.Down16MBps = must(streamThroughput(ctx, sp, opSource, 16, o.size)).MBps
				row.Down64MBps = must(streamThroughput(ctx, sp, opSource, 64, o.size)).MBps
				row.Small = must(streamRTT(ctx, sp, o.iters))
				row.SetupPerSec = must(profiled(prof, "setup", func() (float64, error) { return streamSetupRate(ctx, sp, o.setup) }))
				if !strings.HasPrefix(sp.name, "direct") {
					row.HOLCost = must(holCost(ctx, sp, 4, o.holStream))
				}
			}); err != nil {
				row.Error = err.Error()
				t.Logf("run %d: %s: %v", r+1, sp.name, err)
			}
			t.Logf("run %d: %s: up %.0f down %.0f MB/s", r+1, sp.name, row.UpMBps, row.DownMBps)
			rows = append(rows, row)
		}
		for _, hp := range https {
			row := newRow(hp.name, "http", hp.note)
			if err := attempt(func() {
				prof := o.profiler(hp.name)
				up := must(profiled(prof, "up", func() (throughput, error) { return httpThroughput(ctx, hp, true, 1, o.size) }))
				down := must(profiled(prof, "down", func() (throughput, error) { return httpThroughput(ctx, hp, false, 1, o.size) }))
				row.UpMBps, row.CPUUp, row.DownMBps, row.CPUDown = up.MBps, up.CPUPerGiB, down.MBps, down.CPUPerGiB
				row.Down16MBps = must(httpThroughput(ctx, hp, false, 16, o.size)).MBps
				row.Down64MBps = must(httpThroughput(ctx, hp, false, 64, o.size)).MBps
				row.Small = must(httpLatency(ctx, hp, "/bytes?n=1", o.iters))
				row.KiB = must(httpLatency(ctx, hp, "/bytes?n=1024", o.iters))
				row.List = must(httpLatency(ctx, hp, "/list", max(10, o.iters/10)))
				row.SetupPerSec = must(profiled(prof, "requests", func() (float64, error) { return httpRequestRate(ctx, hp, o.setup) }))
			}); err != nil {
				row.Error = err.Error()
				t.Logf("run %d: %s: %v", r+1, hp.name, err)
			}
			t.Logf("run %d: %s: up %.0f down %.0f MB/s", r+1, hp.name, row.UpMBps, row.DownMBps)
			rows = append(rows, row)
		}
		ratios(rows)
		rep.Runs = append(rep.Runs, rows)
		o.profileDir = "" // the first run is profiled
	}
	rep.Rows = medians(rep.Runs)

	// The stream window, on the batched tunnel, one stream each way.
	for _, w := range o.sweep {
		name := fmt.Sprintf("window %d KiB", w>>10)
		row := newRow(name, "stream", "batched agent writes")
		err := attempt(func() {
			sp := must(tunnelAlone(name, "batched agent writes", u, p, agentBatched, &tunnel.Config{StreamWindow: w}))
			defer sp.close()
			var runsW [][]Row
			for range o.runs {
				up := must(streamThroughput(ctx, sp, opSink, 1, o.size/2))
				down := must(streamThroughput(ctx, sp, opSource, 1, o.size/2))
				hol := must(holCost(ctx, sp, 4, o.holStream))
				r := newRow(name, "stream", "")
				r.UpMBps, r.DownMBps, r.CPUUp, r.CPUDown, r.HOLCost = up.MBps, down.MBps, up.CPUPerGiB, down.CPUPerGiB, hol
				runsW = append(runsW, []Row{r})
			}
			row = medians(runsW)[0]
		})
		if err != nil {
			row.Error = err.Error()
		}
		rep.Sweep = append(rep.Sweep, row)
	}

	index := 0
	for _, kind := range []string{"tunnel", "remotedialer"} {
		name := "pkg/tunnel (relay.Server)"
		if kind == "remotedialer" {
			name = "remotedialer " + remotedialerVersion
		}
		for _, n := range o.idle {
			index++
			r, err := idleTunnels(p, kind, n, index)
			if err != nil {
				r = IdleResult{What: "tunnel", N: n, Note: "failed: " + err.Error()}
				r.nan()
			}
			r.Contender = name
			rep.Idle = append(rep.Idle, r)
			t.Logf("idle %s ×%d: relay %.0f B %.1f goroutines per tunnel (%d up)", kind, n, r.RelayBytes, r.RelayGoroutines, r.Reached)
		}
		index++
		r, err := idleStreams(p, kind, o.idleSt, index)
		if err != nil {
			r = IdleResult{What: "stream", N: o.idleSt, Note: "failed: " + err.Error()}
			r.nan()
		}
		r.Contender = name
		if kind == "tunnel" {
			r.Contender = "pkg/tunnel (Pool)"
		}
		rep.Idle = append(rep.Idle, r)
	}
	for _, kind := range []string{"tunnel", "remotedialer"} {
		if o.storm == 0 {
			break
		}
		index++
		r, err := reconnectStorm(p, kind, o.storm, index)
		if err != nil {
			r = StormResult{N: o.storm, Note: "failed: " + err.Error()}
		}
		r.Contender = kind
		rep.Storm = append(rep.Storm, r)
		t.Logf("storm %s ×%d: %+v", kind, o.storm, r)
	}
	return rep
}

// ratios fills each row's ratios against direct TLS (the stream row) and the
// remotedialer row of its level, all from the same run.
func ratios(rows []Row) {
	find := func(level, prefix string) *Row {
		for i := range rows {
			if rows[i].Level == level && strings.HasPrefix(rows[i].Contender, prefix) {
				return &rows[i]
			}
		}
		return nil
	}
	tls := find("stream", "direct TLS")
	for i := range rows {
		r := &rows[i]
		if tls != nil {
			r.UpVsTLS, r.DownVsTLS = r.UpMBps/tls.UpMBps, r.DownMBps/tls.DownMBps
		}
		if rd := find(r.Level, "remotedialer"); rd != nil {
			r.UpVsRD, r.DownVsRD = r.UpMBps/rd.UpMBps, r.DownMBps/rd.DownMBps
		}
		direct := find(r.Level, "direct TLS")
		if r.Level == "http" {
			direct = find("http", "direct HTTPS")
		}
		if direct != nil {
			r.AddedP50us = r.Small.P50us - direct.Small.P50us
		}
		if r.Contender == "fleet, forwarded" {
			if o := find("http", "fleet, owner"); o != nil {
				r.UpVsOwner, r.DownVsOwner = r.UpMBps/o.UpMBps, r.DownMBps/o.DownMBps
			}
		}
	}
}

// median of the figures measured (NaN: not measured, left out).
func median(v []float64) float64 {
	v = slices.DeleteFunc(slices.Clone(v), math.IsNaN)
	slices.Sort(v)
	if len(v) == 0 {
		return math.NaN()
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func medians(runs [][]Row) []Row {
	out := slices.Clone(runs[0])
	for i := range out {
		pick := func(f func(Row) float64) float64 {
			var v []float64
			for _, rows := range runs {
				v = append(v, f(rows[i]))
			}
			return median(v)
		}
		r := &out[i]
		r.UpMBps = pick(func(r Row) float64 { return r.UpMBps })
		r.DownMBps = pick(func(r Row) float64 { return r.DownMBps })
		r.Down16MBps = pick(func(r Row) float64 { return r.Down16MBps })
		r.Down64MBps = pick(func(r Row) float64 { return r.Down64MBps })
		r.CPUUp = pick(func(r Row) float64 { return r.CPUUp })
		r.CPUDown = pick(func(r Row) float64 { return r.CPUDown })
		r.UpVsTLS = pick(func(r Row) float64 { return r.UpVsTLS })
		r.DownVsTLS = pick(func(r Row) float64 { return r.DownVsTLS })
		r.UpVsRD = pick(func(r Row) float64 { return r.UpVsRD })
		r.DownVsRD = pick(func(r Row) float64 { return r.DownVsRD })
		r.Small.P50us = pick(func(r Row) float64 { return r.Small.P50us })
		r.Small.P99us = pick(func(r Row) float64 { return r.Small.P99us })
		r.KiB.P50us = pick(func(r Row) float64 { return r.KiB.P50us })
		r.KiB.P99us = pick(func(r Row) float64 { return r.KiB.P99us })
		r.List.P50us = pick(func(r Row) float64 { return r.List.P50us })
		r.List.P99us = pick(func(r Row) float64 { return r.List.P99us })
		r.AddedP50us = pick(func(r Row) float64 { return r.AddedP50us })
		r.SetupPerSec = pick(func(r Row) float64 { return r.SetupPerSec })
		r.HOLCost = pick(func(r Row) float64 { return r.HOLCost })
		r.UpVsOwner = pick(func(r Row) float64 { return r.UpVsOwner })
		r.DownVsOwner = pick(func(r Row) float64 { return r.DownVsOwner })
		var errs []string
		for k, rows := range runs {
			if rows[i].Error != "" {
				errs = append(errs, fmt.Sprintf("run %d: %s", k+1, rows[i].Error))
			}
		}
		r.Error = strings.Join(errs, "; ")
	}
	return out
}

// nan marks every figure not measured.
func (r *IdleResult) nan() {
	n := math.NaN()
	r.RelayBytes, r.RelayGoroutines, r.AgentBytes, r.AgentGoroutines = n, n, n, n
	r.BusyP50us, r.BusyP99us, r.AfterRelayBytes = n, n, n
}

func num(f float64, prec int) string {
	if math.IsNaN(f) {
		return "–"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

// MarshalJSON writes NaN (not measured) as -1.
func (r IdleResult) MarshalJSON() ([]byte, error) {
	type plain IdleResult
	for _, f := range []*float64{&r.RelayBytes, &r.RelayGoroutines, &r.AgentBytes, &r.AgentGoroutines, &r.BusyP50us, &r.BusyP99us, &r.AfterRelayBytes} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = -1
		}
	}
	return json.Marshal(plain(r))
}

// MarshalJSON writes NaN (not applicable) as -1.
func (r Row) MarshalJSON() ([]byte, error) {
	type plain Row
	b, err := json.Marshal(plain(r.clean()))
	return b, err
}

func (r Row) clean() Row {
	fix := func(f *float64) {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = -1
		}
	}
	for _, f := range []*float64{&r.UpMBps, &r.DownMBps, &r.Down16MBps, &r.Down64MBps, &r.CPUUp, &r.CPUDown, &r.UpVsTLS, &r.DownVsTLS,
		&r.UpVsRD, &r.DownVsRD, &r.Small.P50us, &r.Small.P99us, &r.KiB.P50us, &r.KiB.P99us, &r.List.P50us, &r.List.P99us,
		&r.AddedP50us, &r.SetupPerSec, &r.HOLCost, &r.UpVsOwner, &r.DownVsOwner} {
		fix(f)
	}
	return r
}

func pct(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

func times(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) || f == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", f)
}

func lat(l latency) string {
	if l.P50us == 0 || math.IsNaN(l.P50us) {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f", l.P50us, l.P99us)
}

func markdown(rep *Report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "## Tunnel benchmark — %s, %s cores (GOMAXPROCS %s), %s, %s, kernel %s, GOGC %s\n\n",
		m["cpu"], m["cores"], m["GOMAXPROCS"], m["go"], m["os/arch"], m["kernel"], m["GOGC"])
	fmt.Fprintf(&b, "Loopback; throughput, latency and set-up rows in one process, idle and storm rows in host processes; medians of %s runs; %s bytes per throughput figure; %s; client side %s; peer rancher/remotedialer %s (the newest release whose go.mod accepts Go 1.26). %s.\n\n",
		rep.Settings["runs"], rep.Settings["bytes per throughput figure"], rep.Settings["tls"], rep.Settings["client side HTTP"], remotedialerVersion, m["date"])
	b.WriteString("↑ = client → upstream (request bodies, relay → agent); ↓ = upstream → client (responses, agent → relay). MB/s = 10⁶ B/s. Ratios are computed within each run, then the median taken; http rows are compared with the direct TLS *stream* (the limit) and with remotedialer's http row. Latency p50 / p99 in µs: stream rows a 1-byte echo on an open stream, http rows whole GETs of 1 B / 1 KiB / the 1 MiB JSON list; “+p50” is the small p50 over the direct path of the same level. Set-up: stream rows open + 1-byte echo + close per second (4 workers); http rows 1-byte GETs per second (8 workers). CPU: whole-process seconds per GiB moved (both ends and the upstream). HOL: throughput 4 healthy streams lose while a 5th stream's reader stalls on the same tunnel.\n\n")
	b.WriteString("| contender | level | ↑ MB/s | ↓ MB/s | ↑ vs TLS | ↓ vs TLS | ↑ vs rd | ↓ vs rd | ↓ 16 str. | ↓ 64 str. | CPU s/GiB ↑ / ↓ | small p50/p99 | +p50 | 1 KiB p50/p99 | 1 MiB list p50/p99 | set-up /s | HOL cost |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |\n",
			r.Contender, r.Level, num(r.UpMBps, 0), num(r.DownMBps, 0), pct(r.UpVsTLS), pct(r.DownVsTLS), times(r.UpVsRD), times(r.DownVsRD),
			num(r.Down16MBps, 0), num(r.Down64MBps, 0), num(r.CPUUp, 2), num(r.CPUDown, 2), lat(r.Small), num(r.AddedP50us, 0), lat(r.KiB), lat(r.List), num(r.SetupPerSec, 0), pct(r.HOLCost))
	}
	for _, r := range rep.Rows {
		if !math.IsNaN(r.UpVsOwner) {
			fmt.Fprintf(&b, "\nFleet: the forwarded path (kubectl → replica → owner → agent) moves %s ↑ / %s ↓ of the owner's direct path (same run, median of the runs); small GET p50 %s µs vs %s µs direct.\n",
				pct(r.UpVsOwner), pct(r.DownVsOwner), num(r.Small.P50us, 0), ownerP50(rep.Rows))
		}
	}
	for _, r := range rep.Rows {
		if r.Error != "" {
			fmt.Fprintf(&b, "\n- **%s** (%s) failed to measure: %s\n", r.Contender, r.Level, r.Error)
		}
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(&b, "\n- not measured: %s\n", s)
	}
	b.WriteString("\nContenders:\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "- **%s** (%s): %s\n", r.Contender, r.Level, r.Note)
	}
	if len(rep.Sweep) > 0 {
		b.WriteString("\n### Stream window (tunnel, batched agent writes, one stream)\n\n| window | ↑ MB/s | ↓ MB/s | CPU s/GiB ↑ / ↓ | HOL cost |\n|---|--:|--:|--:|--:|\n")
		for _, r := range rep.Sweep {
			fmt.Fprintf(&b, "| %s | %s | %s | %s / %s | %s |\n", strings.TrimPrefix(r.Contender, "window "), num(r.UpMBps, 0), num(r.DownMBps, 0), num(r.CPUUp, 2), num(r.CPUDown, 2), pct(r.HOLCost))
		}
	}
	if len(rep.Idle) > 0 {
		b.WriteString("\n### Idle cost (each side in a process of its own, baseline just before; live heap + stacks after GC, median of 5 samples)\n\n")
		b.WriteString("| contender | per | count | relay KiB | relay goroutines | agent KiB | agent goroutines | busy 1 KiB echo p50/p99 µs | relay KiB after busy |\n|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rep.Idle {
			count := fmt.Sprint(r.N)
			if r.Reached < r.N {
				count = fmt.Sprintf("%d of %d", r.Reached, r.N)
			}
			busy := "–"
			if !math.IsNaN(r.BusyP50us) {
				busy = fmt.Sprintf("%.0f / %.0f", r.BusyP50us, r.BusyP99us)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Contender, r.What, count,
				num(r.RelayBytes/1024, 1), num(r.RelayGoroutines, 2), num(r.AgentBytes/1024, 1), num(r.AgentGoroutines, 2), busy, num(r.AfterRelayBytes/1024, 1))
		}
		b.WriteString("\nPer stream, the agent side includes the upstream echo's connection and goroutine; “busy”: every stream at once echoes 20 round trips of 1 KiB.\n")
		for _, r := range rep.Idle {
			if r.Reached < r.N {
				fmt.Fprintf(&b, "- %s, %s ×%d: %s\n", r.Contender, r.What, r.N, r.Note)
			}
		}
	}
	if len(rep.Storm) > 0 {
		b.WriteString("\n### Reconnect storm (agents connected, the relay process killed and started again on the same address; agents reconnect with their own backoff)\n\n| contender | agents | back | half back after | all back after | peak reconnects /s |\n|---|--:|--:|--:|--:|--:|\n")
		for _, r := range rep.Storm {
			fmt.Fprintf(&b, "| %s | %d | %d | %.1f s | %.1f s | %d |\n", r.Contender, r.N, r.Reached, r.HalfSec, r.BackSec, r.PeakPerS)
		}
		b.WriteString("\nOurs: tunnel.Backoff as tunnel.Client uses it (full jitter, 0.5 s doubling to 8 s); remotedialer: its ClientConnect's fixed 5 s. The agent host runs at most 32 handshakes at once, as in the idle measure.\n")
		for _, r := range rep.Storm {
			if r.Note != "" {
				fmt.Fprintf(&b, "- %s: %s\n", r.Contender, r.Note)
			}
		}
	}
	return b.String()
}

func ownerP50(rows []Row) string {
	for _, r := range rows {
		if strings.HasPrefix(r.Contender, "fleet, owner") {
			return num(r.Small.P50us, 0)
		}
	}
	return "–"
}
