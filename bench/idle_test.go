package bench

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel/tunneltest"
)

// Idle cost is measured across two processes so that the relay's side is
// counted alone: this process runs the relay, a child (this test binary
// again, as an "agent host") runs the simulated agents and their upstream.

type memStats struct {
	Bytes      int64 // heap in use + goroutine stacks, after a GC
	Goroutines int
}

func memNow() memStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memStats{Bytes: int64(m.HeapInuse + m.StackInuse), Goroutines: runtime.NumGoroutine()}
}

// IdleResult is the cost per tunnel (or per stream) on each side.
type IdleResult struct {
	Contender       string
	What            string // "tunnel" or "stream"
	N               int
	RelayBytes      float64
	RelayGoroutines float64
	AgentBytes      float64
	AgentGoroutines float64
	Note            string `json:",omitempty"`
}

func TestMain(m *testing.M) {
	if os.Getenv("BENCH_AGENT_HOST") != "" {
		if err := agentHost(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// agentHost runs BENCH_N agents of kind BENCH_KIND ("tunnel" or
// "remotedialer") against BENCH_URL and a stream upstream ("addr <host:port>"
// is printed first), prints "ready", then answers each "m" line on stdin
// with "stats <json>", until stdin closes.
func agentHost() error {
	kind, base := os.Getenv("BENCH_KIND"), os.Getenv("BENCH_URL")
	n, _ := strconv.Atoi(os.Getenv("BENCH_N"))
	index, _ := strconv.Atoi(os.Getenv("BENCH_INDEX"))
	caPEM, err := os.ReadFile(os.Getenv("BENCH_CA"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	p := &pki{pool: pool}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer serveListener(ln)()
	fmt.Println("addr", ln.Addr().String())
	base0 := memNow()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	targets := tunnel.Targets{"bench": tcpTarget(ln.Addr().String())}
	sem := make(chan struct{}, 32)
	errc := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		// Many connections need many source addresses: 127.<index>.<i/250>.<i%250+1>.
		local := &net.TCPAddr{IP: net.IPv4(127, byte(1+index%250), byte(i/250), byte(i%250+1))}
		wg.Go(func() {
			defer func() { <-sem }()
			switch kind {
			case "tunnel":
				conn, err := dialAgentConn(ctx, agentDial, fmt.Sprintf("%s/agent/v1/clusters/c%d/tunnel", base, i%idleClusters), p, local)
				if err != nil {
					errc <- err
					return
				}
				s, err := tunneltest.NewAgentSession(conn, nil)
				if err != nil {
					errc <- err
					return
				}
				wg.Go(func() { s.Serve(ctx, targets, 10*time.Millisecond) })
			case "remotedialer":
				wg.Go(func() { runRemotedialerAgent(ctx, base+"/connect", "a"+strconv.Itoa(i), p, local)() })
			}
		})
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		m := memNow()
		m.Bytes -= base0.Bytes
		m.Goroutines -= base0.Goroutines
		b, _ := json.Marshal(m)
		fmt.Println("stats", string(b))
	}
	cancel()
	return nil
}

const idleClusters = 100 // the simulated agents belong to this many clusters

type agentHostProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	addr  string
}

func startAgentHost(kind, url, caFile string, n, index int) (*agentHostProc, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BENCH_AGENT_HOST=1", "BENCH_KIND="+kind, "BENCH_URL="+url,
		"BENCH_N="+strconv.Itoa(n), "BENCH_INDEX="+strconv.Itoa(index), "BENCH_CA="+caFile, "GOMAXPROCS=1")
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
	h := &agentHostProc{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	for h.out.Scan() {
		line := h.out.Text()
		switch {
		case strings.HasPrefix(line, "addr "):
			h.addr = strings.TrimPrefix(line, "addr ")
		case line == "ready":
			return h, nil
		case strings.HasPrefix(line, "error "):
			h.close()
			return nil, errors.New("agent host: " + line)
		}
	}
	h.close()
	return nil, errors.New("agent host ended before it was ready")
}

func (h *agentHostProc) stats() (memStats, error) {
	if _, err := io.WriteString(h.stdin, "m\n"); err != nil {
		return memStats{}, err
	}
	for h.out.Scan() {
		if s, ok := strings.CutPrefix(h.out.Text(), "stats "); ok {
			var m memStats
			return m, json.Unmarshal([]byte(s), &m)
		}
	}
	return memStats{}, errors.New("agent host ended")
}

func (h *agentHostProc) close() {
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

// idleTunnels connects n simulated agents and reports the cost per tunnel
// on both sides. kind is "tunnel" (relay.Server, the agent as tunnel.Dial
// builds it) or "remotedialer".
func idleTunnels(p *pki, kind string, n, index int) (IdleResult, error) {
	var (
		url       string
		connected func() int
		stop      func()
	)
	switch kind {
	case "tunnel":
		names := make([]string, idleClusters)
		for i := range names {
			names[i] = "c" + strconv.Itoa(i)
		}
		rs, cleanup, _, err := newRelay(nil, names...)
		if err != nil {
			return IdleResult{}, err
		}
		srv := p.startTLSServer(rs, true)
		url = wsURL(srv.URL, "")
		connected = func() int {
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
	case "remotedialer":
		rd, srv := remotedialerServer(p, nil)
		url = wsURL(srv.URL, "")
		connected = func() int { return len(rd.ListClients()) }
		stop = srv.Close
	}
	defer stop()
	before := memNow()
	h, err := startAgentHost(kind, url, p.caFile, n, index)
	if err != nil {
		return IdleResult{}, err
	}
	defer h.close()
	if err := waitFor(func() bool { return connected() >= n }); err != nil {
		return IdleResult{}, fmt.Errorf("%d of %d tunnels up: %w", connected(), n, err)
	}
	time.Sleep(500 * time.Millisecond) // let handshakes' garbage and goroutines settle
	after := memNow()
	agent, err := h.stats()
	if err != nil {
		return IdleResult{}, err
	}
	return IdleResult{What: "tunnel", N: n,
		RelayBytes: float64(after.Bytes-before.Bytes) / float64(n), RelayGoroutines: float64(after.Goroutines-before.Goroutines) / float64(n),
		AgentBytes: float64(agent.Bytes) / float64(n), AgentGoroutines: float64(agent.Goroutines) / float64(n)}, nil
}

// idleStreams opens m streams on one tunnel to the agent host's echo and
// holds them open, and reports the cost per stream on each side (the agent
// side includes the echo upstream's connection and goroutine).
func idleStreams(p *pki, kind string, m, index int) (IdleResult, error) {
	var (
		url   string
		open  func(ctx context.Context, echo string) (net.Conn, error)
		ready func() bool
		stop  func()
	)
	switch kind {
	case "tunnel":
		pool := &tunnel.Pool{}
		var handlers sync.WaitGroup
		srv := p.startTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := tunnel.Accept(w, r, nil)
			if err != nil {
				return
			}
			handlers.Add(1)
			defer handlers.Done()
			pool.Add(s)
			<-s.Done()
		}), false)
		url = wsURL(srv.URL, "")
		open = func(ctx context.Context, _ string) (net.Conn, error) { return pool.Open(ctx, "bench") }
		ready = func() bool { return pool.Len() == 1 }
		stop = func() { pool.Close(); handlers.Wait(); srv.Close() }
	case "remotedialer":
		rd, srv := remotedialerServer(p, nil)
		url = wsURL(srv.URL, "")
		open = func(ctx context.Context, echo string) (net.Conn, error) { return rd.Dialer("a0")(ctx, "tcp", echo) }
		ready = func() bool { return rd.HasSession("a0") }
		stop = srv.Close
	}
	defer stop()
	h, err := startAgentHost(kind, url, p.caFile, 1, index)
	if err != nil {
		return IdleResult{}, err
	}
	defer h.close()
	if err := waitFor(ready); err != nil {
		return IdleResult{}, err
	}
	// The agent side's base is the connected tunnel, before any stream.
	agent0, err := h.stats()
	if err != nil {
		return IdleResult{}, err
	}
	before := memNow()
	conns := make([]net.Conn, 0, m)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	ctx := context.Background()
	for range m {
		c, err := open(ctx, h.addr)
		if err != nil {
			return IdleResult{}, err
		}
		conns = append(conns, c)
		b := []byte{opEcho, 1}
		if _, err := c.Write(b); err != nil {
			return IdleResult{}, err
		}
		if _, err := io.ReadFull(c, b[:1]); err != nil {
			return IdleResult{}, err
		}
	}
	time.Sleep(300 * time.Millisecond)
	after := memNow()
	agent, err := h.stats()
	if err != nil {
		return IdleResult{}, err
	}
	return IdleResult{What: "stream", N: m,
		RelayBytes: float64(after.Bytes-before.Bytes) / float64(m), RelayGoroutines: float64(after.Goroutines-before.Goroutines) / float64(m),
		AgentBytes: float64(agent.Bytes-agent0.Bytes) / float64(m), AgentGoroutines: float64(agent.Goroutines-agent0.Goroutines) / float64(m),
		Note: "agent side includes the upstream echo's connection and goroutine"}, nil
}
