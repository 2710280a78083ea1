package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/clusterconnect/clusterconnect/test/cluster"
)

// StartFleet starts n relay replicas on one etcd cluster: the first makes
// the development CA, serving certificate, admin token and key-encryption
// key, which the others are given (as a Deployment's pods get them from
// Secrets), so that one kubeconfig works through any replica with only the
// server's host:port changed.
func (e *Env) StartFleet(ctx context.Context, n int, etcd *cluster.Etcd) ([]*Relay, error) {
	var relays []*Relay
	var first string
	for i := range n {
		dir, err := e.NewDir(fmt.Sprintf("relay-%d", i))
		if err != nil {
			return nil, err
		}
		if i > 0 {
			for _, f := range []string{"ca.crt", "ca.key", "serving.crt", "serving.key", "admin-token", "kek"} {
				b, err := os.ReadFile(filepath.Join(first, f))
				if err != nil {
					return nil, fmt.Errorf("replica %d: %w", i, err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
					return nil, err
				}
			}
		} else {
			first = dir
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := []string{
			"--store", "etcd", "--etcd-endpoints", strings.Join(etcd.Endpoints, ","),
			"--etcd-cert", etcd.ClientCert, "--etcd-key", etcd.ClientKey, "--etcd-ca", etcd.CAFile,
			"--peer-url", "https://127.0.0.1:" + strconv.Itoa(port), "--replica-id", fmt.Sprintf("relay-%d", i),
		}
		r, err := e.StartRelay(ctx, &RelayOptions{DataDir: dir, Port: port, ExtraArgs: args})
		if err != nil {
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
		relays = append(relays, r)
	}
	return relays, nil
}

// Balancer is a TCP load balancer on loopback: each connection goes to
// the next backend in turn that accepts it (like a cloud load balancer in
// front of a fleet, without health checks: a dead backend is skipped when
// its dial fails).
type Balancer struct {
	// URL is https://127.0.0.1:<port>.
	URL      string
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	pinned   atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

// StartBalancer balances over backends (host:port each); stopped with the
// environment.
func (e *Env) StartBalancer(backends []string) (*Balancer, error) {
	b, err := NewBalancer("127.0.0.1:0", backends)
	if err != nil {
		return nil, err
	}
	e.OnStop(b.Stop)
	return b, nil
}

// NewBalancer listens on addr and balances over backends until Stop.
func NewBalancer(addr string, backends []string) (*Balancer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &Balancer{URL: "https://" + ln.Addr().String(), ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	b.wg.Go(b.serve)
	return b, nil
}

func (b *Balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() { b.pipe(c) })
	}
}

func (b *Balancer) track(c net.Conn, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.conns[c] = struct{}{}
	} else {
		delete(b.conns, c)
	}
}

func (b *Balancer) pipe(c net.Conn) {
	defer c.Close()
	var up net.Conn
	var err error
	start := b.next.Add(1)
	if b.pinned.Add(-1) >= 0 {
		start = 0 // the first backend, while pinned
	}
	for i := range len(b.backends) {
		if up, err = net.Dial("tcp", b.backends[(int(start)+i)%len(b.backends)]); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	b.track(c, true)
	b.track(up, true)
	defer b.track(c, false)
	defer b.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	// One side ended (a replica died, the agent left): end the other.
	c.Close()
	up.Close()
	<-done
}

// Pin sends the next n connections to the first backend (a load
// balancer that happens to put an agent's tunnels on one replica).
func (b *Balancer) Pin(n int) { b.pinned.Store(int64(n)) }

// Stop closes the listener and every connection.
func (b *Balancer) Stop() {
	if err := b.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
