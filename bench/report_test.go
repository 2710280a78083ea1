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
}

// Report is what results/latest.json holds.
type Report struct {
	Machine  map[string]string
	Settings map[string]string
	Rows     []Row
	Sweep    []Row // the tunnel (batched agent) per stream window, one stream
	Idle     []IdleResult
	Runs     [][]Row // every run's raw figures
}

type opts struct {
	runs      int
	size      int64
	iters     int           // latency samples
	setup     time.Duration // how long a rate is measured
	idle      []int         // simulated agent counts
	idleSt    int           // idle streams
	sweep     []uint32      // windows
	holStream int64
}

func TestReport(t *testing.T) {
	if !*report {
		t.Skip("the full harness runs with -report (make bench)")
	}
	o := opts{runs: *runs, size: *size, iters: 2000, setup: 2 * time.Second, idleSt: 1000,
		sweep: []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20}, holStream: *size / 4}
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
		sweep: []uint32{256 << 10}, holStream: 1 << 20}
	rep := run(t, o)
	md := markdown(rep)
	t.Log("\n" + md)
	if len(rep.Rows) != len(rep.Runs[0]) || len(rep.Idle) != 4 {
		t.Fatalf("incomplete report: %d rows, %d idle results", len(rep.Rows), len(rep.Idle))
	}
	for _, r := range rep.Rows {
		if r.DownMBps <= 0 || r.UpMBps <= 0 || r.Small.P50us <= 0 || r.SetupPerSec <= 0 {
			t.Errorf("%s (%s): a figure is missing: %+v", r.Contender, r.Level, r)
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
	defer os.Remove(p.caFile)
	u := must(startUpstreams(p.cert))
	defer u.Close()

	streams := []*streamPath{directTCP(u), directTLS(u, p),
		must(tunnelAlone("tunnel, defaults", "pkg/tunnel as shipped: coder/websocket agent, 4 MiB window", u, p, agentDial, nil)),
		must(tunnelAlone("tunnel, batched agent writes", "tunneltest.BatchWebSocketWrites under the agent's coder/websocket", u, p, agentBatched, nil)),
		must(tunnelAlone("tunnel, batched + 16 MiB window", "batched agent writes, StreamWindow 16 MiB", u, p, agentBatched, tunedConfig)),
		must(tunnelAlone("tunnel, gorilla agent", "agent on gorilla/websocket (64 KiB write buffer), relay on coder", u, p, agentGorilla, nil)),
		must(remotedialerAlone(u, p)),
	}
	defer func() {
		for _, s := range streams {
			s.close()
		}
	}()
	https := []*httpPath{directHTTPS(u, p),
		must(fullPath("full path, defaults", "relay.Server + clusteragent/connect, defaults", u, p, agentDial, nil)),
		must(fullPath("full path, 16 MiB window", "relay.Server + clusteragent/connect, StreamWindow 16 MiB", u, p, agentDial, tunedConfig)),
		must(fullPath("full path, batched + 16 MiB", "relay.Server + agent with batched writes (Dial + BatchWebSocketWrites), 16 MiB", u, p, agentBatched, tunedConfig)),
		must(remotedialerFull(u, p)),
	}
	defer func() {
		for _, h := range https {
			h.close()
		}
	}()

	ctx := context.Background()
	rep = &Report{Machine: machine(), Settings: map[string]string{
		"runs": fmt.Sprint(o.runs), "bytes per throughput figure": fmt.Sprint(o.size),
		"latency samples": fmt.Sprint(o.iters), "remotedialer": remotedialerVersion,
		"tls": "TLS 1.3, ECDSA P-256, loopback", "client side HTTP": "HTTP/2 (as kubectl)",
	}}
	for r := range o.runs {
		var rows []Row
		for _, sp := range streams {
			row := Row{Contender: sp.name, Level: "stream", Note: sp.note, HOLCost: math.NaN()}
			up := must(streamThroughput(ctx, sp, opSink, 1, o.size))
			down := must(streamThroughput(ctx, sp, opSource, 1, o.size))
			row.UpMBps, row.CPUUp, row.DownMBps, row.CPUDown = up.MBps, up.CPUPerGiB, down.MBps, down.CPUPerGiB
			row.Down16MBps = must(streamThroughput(ctx, sp, opSource, 16, o.size)).MBps
			row.Down64MBps = must(streamThroughput(ctx, sp, opSource, 64, o.size)).MBps
			row.Small = must(streamRTT(ctx, sp, o.iters))
			row.SetupPerSec = must(streamSetupRate(ctx, sp, o.setup))
			if !strings.HasPrefix(sp.name, "direct") {
				row.HOLCost = must(holCost(ctx, sp, 4, o.holStream))
			}
			t.Logf("run %d: %s: up %.0f down %.0f MB/s", r+1, sp.name, row.UpMBps, row.DownMBps)
			rows = append(rows, row)
		}
		for _, hp := range https {
			row := Row{Contender: hp.name, Level: "http", Note: hp.note, HOLCost: math.NaN()}
			up := must(httpThroughput(ctx, hp, true, 1, o.size))
			down := must(httpThroughput(ctx, hp, false, 1, o.size))
			row.UpMBps, row.CPUUp, row.DownMBps, row.CPUDown = up.MBps, up.CPUPerGiB, down.MBps, down.CPUPerGiB
			row.Down16MBps = must(httpThroughput(ctx, hp, false, 16, o.size)).MBps
			row.Down64MBps = must(httpThroughput(ctx, hp, false, 64, o.size)).MBps
			row.Small = must(httpLatency(ctx, hp, "/bytes?n=1", o.iters))
			row.KiB = must(httpLatency(ctx, hp, "/bytes?n=1024", o.iters))
			row.List = must(httpLatency(ctx, hp, "/list", max(10, o.iters/10)))
			row.SetupPerSec = must(httpRequestRate(ctx, hp, o.setup))
			t.Logf("run %d: %s: up %.0f down %.0f MB/s", r+1, hp.name, row.UpMBps, row.DownMBps)
			rows = append(rows, row)
		}
		ratios(rows)
		rep.Runs = append(rep.Runs, rows)
	}
	rep.Rows = medians(rep.Runs)

	// The stream window, on the batched tunnel, one stream each way.
	for _, w := range o.sweep {
		sp := must(tunnelAlone(fmt.Sprintf("window %d KiB", w>>10), "batched agent writes", u, p, agentBatched, &tunnel.Config{StreamWindow: w}))
		var runsW [][]Row
		for range o.runs {
			up := must(streamThroughput(ctx, sp, opSink, 1, o.size/2))
			down := must(streamThroughput(ctx, sp, opSource, 1, o.size/2))
			hol := must(holCost(ctx, sp, 4, o.holStream))
			runsW = append(runsW, []Row{{Contender: sp.name, Level: "stream", UpMBps: up.MBps, DownMBps: down.MBps, CPUUp: up.CPUPerGiB, CPUDown: down.CPUPerGiB, HOLCost: hol}})
		}
		sp.close()
		rep.Sweep = append(rep.Sweep, medians(runsW)...)
	}

	index := 0
	for _, kind := range []string{"tunnel", "remotedialer"} {
		for _, n := range o.idle {
			index++
			r := must(idleTunnels(p, kind, n, index))
			r.Contender = kind
			rep.Idle = append(rep.Idle, r)
			t.Logf("idle %s ×%d: relay %.0f B %.1f goroutines per tunnel", kind, n, r.RelayBytes, r.RelayGoroutines)
		}
		index++
		r := must(idleStreams(p, kind, o.idleSt, index))
		r.Contender = kind
		rep.Idle = append(rep.Idle, r)
	}
	for i := range rep.Idle {
		if rep.Idle[i].Contender == "tunnel" {
			rep.Idle[i].Contender = "pkg/tunnel (relay.Server)"
			if rep.Idle[i].What == "stream" {
				rep.Idle[i].Contender = "pkg/tunnel (Pool)"
			}
		} else {
			rep.Idle[i].Contender = "remotedialer " + remotedialerVersion
		}
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
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
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
	}
	return out
}

// MarshalJSON writes NaN (not applicable) as null.
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
		&r.AddedP50us, &r.SetupPerSec, &r.HOLCost} {
		fix(f)
	}
	return r
}

func pct(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

func times(f float64) string {
	if math.IsNaN(f) || f == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", f)
}

func lat(l latency) string {
	if l.P50us == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f", l.P50us, l.P99us)
}

func markdown(rep *Report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "## Tunnel benchmark — %s, %s cores (GOMAXPROCS %s), %s, %s, kernel %s, GOGC %s\n\n",
		m["cpu"], m["cores"], m["GOMAXPROCS"], m["go"], m["os/arch"], m["kernel"], m["GOGC"])
	fmt.Fprintf(&b, "Loopback, one process; medians of %s runs; %s bytes per throughput figure; %s; client side %s; peer rancher/remotedialer %s (the newest release whose go.mod accepts Go 1.26). %s.\n\n",
		rep.Settings["runs"], rep.Settings["bytes per throughput figure"], rep.Settings["tls"], rep.Settings["client side HTTP"], remotedialerVersion, m["date"])
	b.WriteString("↑ = client → upstream (request bodies, relay → agent); ↓ = upstream → client (responses, agent → relay). MB/s = 10⁶ B/s. Ratios are computed within each run, then the median taken; http rows are compared with the direct TLS *stream* (the limit) and with remotedialer's http row. Latency p50 / p99 in µs: stream rows a 1-byte echo on an open stream, http rows whole GETs of 1 B / 1 KiB / the 1 MiB JSON list; “+p50” is the small p50 over the direct path of the same level. Set-up: stream rows open + 1-byte echo + close per second (4 workers); http rows 1-byte GETs per second (8 workers). CPU: whole-process seconds per GiB moved (both ends and the upstream). HOL: throughput 4 healthy streams lose while a 5th stream's reader stalls on the same tunnel.\n\n")
	b.WriteString("| contender | level | ↑ MB/s | ↓ MB/s | ↑ vs TLS | ↓ vs TLS | ↑ vs rd | ↓ vs rd | ↓ 16 str. | ↓ 64 str. | CPU s/GiB ↑ / ↓ | small p50/p99 | +p50 | 1 KiB p50/p99 | 1 MiB list p50/p99 | set-up /s | HOL cost |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %.0f | %.0f | %.2f / %.2f | %s | %.0f | %s | %s | %.0f | %s |\n",
			r.Contender, r.Level, r.UpMBps, r.DownMBps, pct(r.UpVsTLS), pct(r.DownVsTLS), times(r.UpVsRD), times(r.DownVsRD),
			r.Down16MBps, r.Down64MBps, r.CPUUp, r.CPUDown, lat(r.Small), r.AddedP50us, lat(r.KiB), lat(r.List), r.SetupPerSec, pct(r.HOLCost))
	}
	b.WriteString("\nContenders:\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "- **%s** (%s): %s\n", r.Contender, r.Level, r.Note)
	}
	if len(rep.Sweep) > 0 {
		b.WriteString("\n### Stream window (tunnel, batched agent writes, one stream)\n\n| window | ↑ MB/s | ↓ MB/s | CPU s/GiB ↑ / ↓ | HOL cost |\n|---|--:|--:|--:|--:|\n")
		for _, r := range rep.Sweep {
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.2f / %.2f | %s |\n", strings.TrimPrefix(r.Contender, "window "), r.UpMBps, r.DownMBps, r.CPUUp, r.CPUDown, pct(r.HOLCost))
		}
	}
	if len(rep.Idle) > 0 {
		b.WriteString("\n### Idle cost (relay in this process, agents in a child process; heap in use + stacks after GC)\n\n| contender | per | count | relay KiB | relay goroutines | agent KiB | agent goroutines |\n|---|---|--:|--:|--:|--:|--:|\n")
		for _, r := range rep.Idle {
			fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.2f | %.1f | %.2f |\n", r.Contender, r.What, r.N, r.RelayBytes/1024, r.RelayGoroutines, r.AgentBytes/1024, r.AgentGoroutines)
		}
		b.WriteString("\nPer stream, the agent side includes the upstream echo's connection and goroutine.\n")
	}
	return b.String()
}
