package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rancher/remotedialer"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel/tunneltest"
)

// Idle cost is measured with each side in a process of its own, so that
// nothing else the harness did is counted: a relay host (this test binary
// again, BENCH_HOST=relay) runs one contender's relay side, an agent host
// (BENCH_HOST=agents) its agents and their upstream. Each host takes its
// baseline just before the tunnels (or streams) come, and every figure is
// heap and stacks from runtime/metrics after forced collections, the median
// of several samples. A contender that cannot reach the count is reported
// with the count it reached.

type memStats struct {
	Bytes      int64 // live heap + goroutine stacks, after GC
	Goroutines int64
}

var memMetrics = []string{"/gc/heap/live:bytes", "/memory/classes/heap/stacks:bytes", "/sched/goroutines:goroutines"}

func memSample() memStats {
	runtime.GC()
	runtime.GC()
	s := make([]metrics.Sample, len(memMetrics))
	for i, n := range memMetrics {
		s[i].Name = n
	}
	metrics.Read(s)
	return memStats{Bytes: int64(s[0].Value.Uint64() + s[1].Value.Uint64()), Goroutines: int64(s[2].Value.Uint64())}
}

// memNow is the median of five samples.
func memNow() memStats {
	var b, g []int64
	for range 5 {
		m := memSample()
		b, g = append(b, m.Bytes), append(g, m.Goroutines)
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(b)
	slices.Sort(g)
	return memStats{Bytes: b[len(b)/2], Goroutines: g[len(g)/2]}
}

// IdleResult is the cost per tunnel (or per stream) on each side.
type IdleResult struct {
	Contender       string
	What            string // "tunnel" or "stream"
	N               int    // asked for
	Reached         int    // came up; the figures are per reached one
	RelayBytes      float64
	RelayGoroutines float64
	AgentBytes      float64
	AgentGoroutines float64
	// Streams only: the same streams each echo 1 KiB round trips, all at
	// once; then the relay's cost per stream again, once they are idle.
	BusyP50us, BusyP99us float64
	AfterRelayBytes      float64
	Note                 string `json:",omitempty"`
}

func TestMain(m *testing.M) {
	var err error
	if os.Getenv("BENCH_PROFILE_DIR") != "" {
		// Finer heap samples for the idle profiles; it costs some memory of
		// its own, so figures from a PROFILE=1 run are not the table's.
		runtime.MemProfileRate = 4096
	}
	switch os.Getenv("BENCH_HOST") {
	case "":
		os.Exit(m.Run())
	case "relay":
		err = relayHost()
	case "agents":
		err = agentHost()
	default:
		err = errors.New("unknown BENCH_HOST")
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// hostEnv is what a host process is told.
type hostEnv struct {
	kind   string // "tunnel" or "remotedialer"
	mode   string // "tunnels" or "streams"
	n      int    // agents (tunnels mode)
	index  int    // picks the agents' source addresses
	url    string // the relay (agent host)
	listen string // the relay host's address (empty: any free port)
	p      *pki
}

func readHostEnv() (hostEnv, error) {
	n, _ := strconv.Atoi(os.Getenv("BENCH_N"))
	index, _ := strconv.Atoi(os.Getenv("BENCH_INDEX"))
	p, err := loadPKI(os.Getenv("BENCH_CERT"), os.Getenv("BENCH_KEY"))
	return hostEnv{kind: os.Getenv("BENCH_KIND"), mode: os.Getenv("BENCH_MODE"), n: n, index: index,
		url: os.Getenv("BENCH_URL"), p: p}, err
}

// relayHost serves the contender's relay side, prints "url <wss base>" and
// "ready", then answers commands (see hostCommands).
func relayHost() error {
	e, err := readHostEnv()
	if err != nil {
		return err
	}
	var (
		count func() int
		open  func(ctx context.Context, echo string) (net.Conn, error)
		stop  func()
	)
	switch {
	case e.kind == "tunnel" && e.mode == "tunnels":
		names := make([]string, idleClusters)
		for i := range names {
			names[i] = "c" + strconv.Itoa(i)
		}
		rs, cleanup, _, err := newRelay(nil, names...)
		if err != nil {
			return err
		}
		srv, err := e.p.startTLSServerOn(os.Getenv("BENCH_LISTEN"), rs, true)
		if err != nil {
			cleanup()
			return err
		}
		fmt.Println("url", wsURL(srv.URL, ""))
		count = func() int {
			t := 0
			for _, name := range names {
				t += rs.Connected(name)
			}
			return t
		}
		stop = func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rs.Shutdown(ctx)
			cancel()
			srv.Close()
			cleanup()
		}
	case e.kind == "tunnel":
		pool := &tunnel.Pool{}
		srv := e.p.startTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s, err := tunnel.Accept(w, r, nil); err == nil {
				pool.Add(s)
			}
		}), false)
		fmt.Println("url", wsURL(srv.URL, ""))
		count = pool.Len
		open = func(ctx context.Context, _ string) (net.Conn, error) { return pool.Open(ctx, "bench") }
		stop = func() { pool.Close(); srv.Close() }
	case e.kind == "remotedialer":
		rd, srv, err := remotedialerServerOn(os.Getenv("BENCH_LISTEN"), e.p, nil)
		if err != nil {
			return err
		}
		fmt.Println("url", wsURL(srv.URL, ""))
		count = func() int { return len(rd.ListClients()) }
		open = func(ctx context.Context, echo string) (net.Conn, error) { return rd.Dialer("a0")(ctx, "tcp", echo) }
		stop = srv.Close
	default:
		return fmt.Errorf("unknown contender %q", e.kind)
	}
	defer stop()
	base := memNow()
	fmt.Println("ready")
	return hostCommands(base, count, open)
}

// hostCommands answers the parent, one line each, until stdin closes:
//
//	base        take the baseline now               → ok
//	count       tunnels up                           → count N
//	stats       cost since the baseline              → stats {memStats}
//	open M ECHO open M streams to ECHO (relay host)  → opened K [error]
//	busy K      K 1 KiB echoes on every open stream  → busy P50µs P99µs
func hostCommands(base memStats, count func() int, open func(ctx context.Context, echo string) (net.Conn, error)) error {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	ctx := context.Background()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "base":
			base = memNow()
			fmt.Println("ok")
		case "count":
			fmt.Println("count", count())
		case "stats":
			m := memNow()
			writeHeapProfile()
			m.Bytes -= base.Bytes
			m.Goroutines -= base.Goroutines
			b, _ := json.Marshal(m)
			fmt.Println("stats", string(b))
		case "open":
			m, _ := strconv.Atoi(f[1])
			var ferr error
			for range m {
				c, err := openEcho(ctx, open, f[2])
				if err != nil {
					ferr = err
					break
				}
				conns = append(conns, c)
			}
			if ferr != nil {
				fmt.Println("opened", len(conns), strings.ReplaceAll(ferr.Error(), "\n", " "))
			} else {
				fmt.Println("opened", len(conns))
			}
		case "busy":
			k, _ := strconv.Atoi(f[1])
			l, err := busyStreams(conns, k)
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			fmt.Println("busy", l.P50us, l.P99us)
		default:
			fmt.Println("error unknown command", f[0])
		}
	}
	return nil
}

// writeHeapProfile writes the host's heap profile into BENCH_PROFILE_DIR,
// when set (make bench PROFILE=1), as idle-<kind>-<mode>-<role>.heap.pprof.
func writeHeapProfile() {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return
	}
	name := fmt.Sprintf("idle-%s-%s-%s.heap.pprof", os.Getenv("BENCH_KIND"), os.Getenv("BENCH_MODE"), os.Getenv("BENCH_HOST"))
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return
	}
	defer f.Close()
	pprof.Lookup("heap").WriteTo(f, 0)
}

// openEcho opens a stream to the echo and proves it with one byte.
func openEcho(ctx context.Context, open func(ctx context.Context, echo string) (net.Conn, error), echo string) (net.Conn, error) {
	if open == nil {
		return nil, errors.New("this host opens no streams")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := open(ctx, echo)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b := []byte{opEcho, 1}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, b[:1]); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// busyStreams runs k round trips of 1 KiB on every stream at once and
// returns the round trips' percentiles.
func busyStreams(conns []net.Conn, k int) (latency, error) {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 1024)
			d := make([]time.Duration, 0, k)
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			defer c.SetDeadline(time.Time{})
			for range k {
				t0 := time.Now()
				if _, err := c.Write(buf); err != nil {
					errs[i] = err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs[i] = err
					return
				}
				d = append(d, time.Since(t0))
			}
			mu.Lock()
			all = append(all, d...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return latency{}, err
	}
	if len(all) == 0 {
		return latency{}, errors.New("no stream open")
	}
	return percentiles(all), nil
}

// agentHost runs BENCH_N agents of BENCH_KIND against BENCH_URL, each
// reconnecting as the contender's own agent does (ours: tunnel.Backoff as
// tunnel.Client uses it; remotedialer: a fixed 5 s, as its ClientConnect),
// and a stream upstream; it prints "addr <upstream>" and "ready" once the
// dials have started, then answers commands (count: agents up).
func agentHost() error {
	e, err := readHostEnv()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer serveListener(ln)()
	fmt.Println("addr", ln.Addr().String())
	base := memNow()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var up atomic.Int64
	targets := tunnel.Targets{"bench": tcpTarget(ln.Addr().String())}
	dials := make(chan struct{}, 32) // handshakes at once
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for i := range e.n {
		// Many connections need many source addresses: 127.<index>.<i/250>.<i%250+1>.
		local := &net.TCPAddr{IP: net.IPv4(127, byte(1+e.index%250), byte(i/250), byte(i%250+1))}
		switch e.kind {
		case "tunnel":
			url := fmt.Sprintf("%s/agent/v1/clusters/c%d/tunnel", e.url, i%idleClusters)
			if e.mode == "streams" {
				url = e.url + "/tunnel"
			}
			wg.Go(func() {
				// As tunnel.Client's loop: the first dial at once, a lost
				// tunnel waits Delay(1), each failure one step more.
				for attempt := 0; ; {
					if attempt > 0 && !sleep(tunnel.Backoff{}.Delay(attempt)) {
						return
					}
					dials <- struct{}{}
					conn, err := dialAgentConn(ctx, agentDial, url, e.p, local)
					<-dials
					if err != nil {
						if ctx.Err() != nil {
							return
						}
						attempt++
						continue
					}
					s, err := tunneltest.NewAgentSession(conn, nil)
					if err != nil {
						attempt++
						continue
					}
					attempt = 1
					up.Add(1)
					s.Serve(ctx, targets, 10*time.Millisecond)
					up.Add(-1)
				}
			})
		case "remotedialer":
			name := "a" + strconv.Itoa(i)
			wg.Go(func() {
				nd := &net.Dialer{LocalAddr: local}
				for {
					dials <- struct{}{}
					var once sync.Once
					release := func() { once.Do(func() { <-dials }) }
					connected := false
					remotedialer.ConnectToProxy(ctx, e.url+"/connect", http.Header{"X-Agent": {name}},
						func(string, string) bool { return true },
						remotedialerDialer(nd, e.p), func(context.Context, *remotedialer.Session) error {
							connected = true
							up.Add(1)
							release()
							return nil
						})
					release()
					if connected {
						up.Add(-1)
					}
					if !sleep(5 * time.Second) {
						return
					}
				}
			})
		}
	}
	fmt.Println("ready")
	return hostCommands(base, func() int { return int(up.Load()) }, nil)
}

const idleClusters = 100 // the simulated agents belong to this many clusters

// host is a running host process.
type host struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	vals  map[string]string // "key value" lines printed before "ready"
}

func startHost(role string, e hostEnv) (*host, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BENCH_HOST="+role, "BENCH_LISTEN="+e.listen, "BENCH_KIND="+e.kind, "BENCH_MODE="+e.mode, "BENCH_URL="+e.url,
		"BENCH_N="+strconv.Itoa(e.n), "BENCH_INDEX="+strconv.Itoa(e.index), "BENCH_CERT="+e.p.caFile, "BENCH_KEY="+e.p.keyFile)
	if role == "agents" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &host{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), vals: map[string]string{}}
	for h.out.Scan() {
		line := h.out.Text()
		switch k, v, _ := strings.Cut(line, " "); {
		case line == "ready":
			return h, nil
		case k == "error":
			h.close()
			return nil, fmt.Errorf("%s host: %s", role, v)
		default:
			h.vals[k] = v
		}
	}
	h.close()
	return nil, fmt.Errorf("%s host ended before it was ready", role)
}

// ask sends cmd and returns the rest of the first line that starts with
// reply (an "error" line is an error).
func (h *host) ask(cmd, reply string) (string, error) {
	if _, err := io.WriteString(h.stdin, cmd+"\n"); err != nil {
		return "", err
	}
	for h.out.Scan() {
		k, v, _ := strings.Cut(h.out.Text(), " ")
		switch k {
		case reply:
			return v, nil
		case "error":
			return "", fmt.Errorf("%s: %s", cmd, v)
		}
	}
	return "", fmt.Errorf("%s: the host ended", cmd)
}

func (h *host) stats() (memStats, error) {
	v, err := h.ask("stats", "stats")
	if err != nil {
		return memStats{}, err
	}
	var m memStats
	return m, json.Unmarshal([]byte(v), &m)
}

func (h *host) count() (int, error) {
	v, err := h.ask("count", "count")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

func (h *host) close() {
	h.stdin.Close()
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
}

// stallAfter ends a wait for tunnels that has seen no progress this long.
const stallAfter = 30 * time.Second

// waitCount polls h until n are up or the count has not grown for
// stallAfter, and returns the count reached.
func waitCount(h *host, n int) (int, error) {
	best, since := -1, time.Now()
	for {
		c, err := h.count()
		if err != nil {
			return 0, err
		}
		if c >= n {
			return c, nil
		}
		if c > best {
			best, since = c, time.Now()
		} else if time.Since(since) > stallAfter {
			return c, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idleTunnels connects n simulated agents and reports the cost per tunnel
// on both sides. kind is "tunnel" (relay.Server; agents' sessions as
// tunnel.Dial builds them) or "remotedialer".
func idleTunnels(p *pki, kind string, n, index int) (IdleResult, error) {
	e := hostEnv{kind: kind, mode: "tunnels", n: n, index: index, p: p}
	relayH, err := startHost("relay", e)
	if err != nil {
		return IdleResult{}, err
	}
	defer relayH.close()
	e.url = relayH.vals["url"]
	if _, err := relayH.ask("base", "ok"); err != nil {
		return IdleResult{}, err
	}
	agentsH, err := startHost("agents", e)
	if err != nil {
		return IdleResult{}, err
	}
	defer agentsH.close()
	reached, err := waitCount(relayH, n)
	if err != nil {
		return IdleResult{}, err
	}
	time.Sleep(500 * time.Millisecond) // handshakes' goroutines end
	rs, err := relayH.stats()
	if err != nil {
		return IdleResult{}, err
	}
	as, err := agentsH.stats()
	if err != nil {
		return IdleResult{}, err
	}
	r := IdleResult{What: "tunnel", N: n, Reached: reached,
		RelayBytes: per(rs.Bytes, reached), RelayGoroutines: per(rs.Goroutines, reached),
		AgentBytes: per(as.Bytes, reached), AgentGoroutines: per(as.Goroutines, reached),
		BusyP50us: math.NaN(), BusyP99us: math.NaN(), AfterRelayBytes: math.NaN()}
	if reached < n {
		r.Note = fmt.Sprintf("%d of %d tunnels came up (no progress for %s)", reached, n, stallAfter)
	}
	return r, nil
}

func per(v int64, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(v) / float64(n)
}

// idleStreams opens m streams on one tunnel to the agent host's echo and
// holds them open: the cost per stream on each side (the agent side includes
// the echo upstream's connection and goroutine). Then every stream echoes
// 1 KiB round trips at once (their percentiles), and the relay's cost per
// stream is taken again once they are idle: whether buffers stay behind.
func idleStreams(p *pki, kind string, m, index int) (IdleResult, error) {
	e := hostEnv{kind: kind, mode: "streams", n: 1, index: index, p: p}
	relayH, err := startHost("relay", e)
	if err != nil {
		return IdleResult{}, err
	}
	defer relayH.close()
	e.url = relayH.vals["url"]
	agentsH, err := startHost("agents", e)
	if err != nil {
		return IdleResult{}, err
	}
	defer agentsH.close()
	if c, err := waitCount(relayH, 1); err != nil || c < 1 {
		return IdleResult{}, fmt.Errorf("the tunnel did not come up (%v)", err)
	}
	for _, h := range []*host{relayH, agentsH} {
		if _, err := h.ask("base", "ok"); err != nil {
			return IdleResult{}, err
		}
	}
	v, err := relayH.ask(fmt.Sprintf("open %d %s", m, agentsH.vals["addr"]), "opened")
	if err != nil {
		return IdleResult{}, err
	}
	f := strings.SplitN(v, " ", 2)
	reached, _ := strconv.Atoi(f[0])
	r := IdleResult{What: "stream", N: m, Reached: reached, BusyP50us: math.NaN(), BusyP99us: math.NaN(), AfterRelayBytes: math.NaN(),
		Note: "agent side includes the upstream echo's connection and goroutine"}
	if len(f) > 1 {
		r.Note = fmt.Sprintf("%d of %d streams opened: %s", reached, m, f[1])
	}
	time.Sleep(300 * time.Millisecond)
	rs, err := relayH.stats()
	if err != nil {
		return IdleResult{}, err
	}
	as, err := agentsH.stats()
	if err != nil {
		return IdleResult{}, err
	}
	r.RelayBytes, r.RelayGoroutines = per(rs.Bytes, reached), per(rs.Goroutines, reached)
	r.AgentBytes, r.AgentGoroutines = per(as.Bytes, reached), per(as.Goroutines, reached)
	if reached == 0 {
		return r, nil
	}
	v, err = relayH.ask("busy 20", "busy")
	if err != nil {
		return IdleResult{}, err
	}
	fmt.Sscan(v, &r.BusyP50us, &r.BusyP99us)
	if rs, err = relayH.stats(); err != nil {
		return IdleResult{}, err
	}
	r.AfterRelayBytes = per(rs.Bytes, reached)
	return r, nil
}
