// Package fleet is what makes several relay replicas on one etcd cluster
// one relay: each replica records the clusters whose tunnels it holds
// (tunnel ownership) under an etcd lease of its own, so the records vanish
// when it dies; a replica asked for a cluster it has no tunnel of forwards
// the request to an owner over mTLS (a peer certificate of the relay CA,
// the caller's verified principal carried along), trying the next owner
// when one is gone.
package fleet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/bufpool"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/dataplane"
)

// LeaseTTL is how long a dead replica's ownership records outlive it.
const LeaseTTL = 10 * time.Second

// peerCertLifetime is the lifetime of a replica's peer certificate; it is
// renewed when a third is left.
const peerCertLifetime = 24 * time.Hour

// Config wires a Fleet.
type Config struct {
	Client *clientv3.Client
	// Prefix is the store's key prefix; ownership lives under
	// <Prefix>owners/<cluster>/<replica>.
	Prefix string
	// ReplicaID names this replica; PeerURL is where the others reach it
	// (https://host:port of its listener).
	ReplicaID, PeerURL string
	// CA issues the peer certificate; RootCAs verify the owners' serving
	// certificates, as ServerName (every replica serves the same
	// certificate: the relay's external name, not the pod's address).
	CA         *clusterca.CA
	RootCAs    *x509.CertPool
	ServerName string
	Logger     *slog.Logger
	Now        func() time.Time
}

type owner struct {
	replica, url string
	tunnels      int
}

// Fleet is one replica's part. Its methods are safe for concurrent use.
type Fleet struct {
	cfg   Config
	log   *slog.Logger
	proxy *httputil.ReverseProxy

	mu     sync.Mutex
	owners map[string]map[string]owner // cluster → replica → owner
	mine   map[string]int              // cluster → this replica's tunnels
	// released: draining; ownership is withdrawn and no longer written.
	released bool
	lease    clientv3.LeaseID
	dirty    map[string]bool // clusters whose record is to be written
	wake     chan struct{}
	cert     *tls.Certificate
	rev      int64 // of the ownership records last read (watch goroutine; load before start)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type record struct {
	URL     string `json:"url"`
	Tunnels int    `json:"tunnels"`
}

// Start starts the replica's lease, its ownership writer and the watch of
// the others' records.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.Client == nil || cfg.CA == nil || cfg.ReplicaID == "" {
		return nil, errors.New("fleet: Client, CA and ReplicaID are required")
	}
	if u, err := url.Parse(cfg.PeerURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fleet: peer URL %q: want https://host:port (--peer-url)", cfg.PeerURL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := &Fleet{
		cfg: cfg, log: cfg.Logger.With("replica", cfg.ReplicaID),
		owners: map[string]map[string]owner{}, mine: map[string]int{}, dirty: map[string]bool{},
		wake: make(chan struct{}, 1),
	}
	f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS13, GetClientCertificate: f.peerCert},
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		// Bodies cross in 64 KiB writes and reads, not the default 4 KiB:
		// each is a TLS record and a system call (docs/performance.md, the
		// forwarded row).
		WriteBufferSize: 64 << 10,
		ReadBufferSize:  64 << 10,
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:       func(*httputil.ProxyRequest) {}, // set per attempt by the transport
		Transport:     &nextOwner{f: f, tr: tr},
		FlushInterval: -1,
		ErrorHandler:  f.proxyError,
		BufferPool:    bufpool.Pool{},
		ErrorLog:      slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
	}
	if _, err := f.peerCert(nil); err != nil {
		return nil, err
	}
	if err := f.load(ctx); err != nil {
		return nil, err
	}
	f.wg.Go(f.write)
	f.wg.Go(f.watch)
	return f, nil
}

// Stop releases the lease (the records go at once) and stops.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *Fleet) prefix() string { return f.cfg.Prefix + "owners/" }

// peerCert returns the replica's peer client certificate, issuing a new one
// when a third of its life is left.
func (f *Fleet) peerCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.Now()
	if c := f.cert; c != nil && now.Before(c.Leaf.NotAfter.Add(-peerCertLifetime/3)) {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	p := api.Principal{Kind: api.PrincipalKindPeer, ID: f.cfg.ReplicaID, Name: "relay replica " + f.cfg.ReplicaID}
	_, leaf, err := f.cfg.CA.IssuePrincipal(csr, p, now, peerCertLifetime)
	if err != nil {
		return nil, fmt.Errorf("fleet: peer certificate: %w", err)
	}
	f.cert = &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	return f.cert, nil
}

// Tunnels records that this replica now holds n tunnels of cluster (the
// write happens in the background, coalesced per cluster).
func (f *Fleet) Tunnels(cluster string, n int) {
	f.mu.Lock()
	if f.released || f.mine[cluster] == n {
		f.mu.Unlock()
		return
	}
	if n == 0 {
		delete(f.mine, cluster)
	} else {
		f.mine[cluster] = n
	}
	f.dirty[cluster] = true
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Release withdraws every ownership record of this replica at once (the
// lease is revoked) and stops recording: it is draining, and the other
// replicas must forward to the replicas its agents move to.
func (f *Fleet) Release() {
	f.mu.Lock()
	f.released = true
	lease := f.lease
	clear(f.dirty)
	f.mu.Unlock()
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(f.ctx, 2*time.Second)
	defer cancel()
	if _, err := f.cfg.Client.Revoke(ctx, lease); err != nil {
		f.log.Warn("fleet: withdrawing tunnel ownership failed; it expires with the lease", "err", err)
		return
	}
	f.log.Info("fleet: tunnel ownership withdrawn (draining)")
}

// write keeps this replica's records in etcd under its lease: the pending
// changes, and all of them again on a new lease (after etcd lost it).
func (f *Fleet) write() {
	var lease clientv3.LeaseID
	var alive <-chan *clientv3.LeaseKeepAliveResponse
	for f.ctx.Err() == nil {
		f.mu.Lock()
		released := f.released
		f.mu.Unlock()
		if lease == 0 && released {
			// Draining: nothing to record, no lease to hold.
			if !sleep(f.ctx, time.Second) {
				break
			}
			continue
		}
		if lease == 0 {
			l, ch, err := f.grant()
			if err != nil {
				f.log.Warn("fleet: no etcd lease; tunnel ownership not recorded yet", "err", err)
				if !sleep(f.ctx, time.Second) {
					break
				}
				continue
			}
			lease, alive = l, ch
			f.mu.Lock()
			f.lease = lease
			if !f.released {
				for c := range f.mine {
					f.dirty[c] = true
				}
			}
			f.mu.Unlock()
		}
		f.mu.Lock()
		pending := make(map[string]int, len(f.dirty))
		for c := range f.dirty {
			pending[c] = f.mine[c]
		}
		clear(f.dirty)
		f.mu.Unlock()
		for c, n := range pending {
			if err := f.put(lease, c, n); err != nil {
				f.mu.Lock()
				if !f.released {
					f.log.Warn("fleet: recording tunnel ownership failed; retrying", "cluster", c, "err", err)
					f.dirty[c] = true
				}
				f.mu.Unlock()
			}
		}
		select {
		case <-f.ctx.Done():
		case <-f.wake:
		case _, ok := <-alive:
			if !ok && f.ctx.Err() == nil {
				f.mu.Lock()
				released := f.released
				f.mu.Unlock()
				if !released {
					f.log.Warn("fleet: etcd lease lost; recording ownership again on a new one")
				}
				lease = 0
			}
		case <-time.After(time.Second):
			// Retry failed writes.
		}
	}
	if lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := f.cfg.Client.Revoke(ctx, lease); err != nil {
			f.log.Warn("fleet: releasing the lease failed; the records expire in its TTL", "err", err)
		}
	}
}

func (f *Fleet) grant() (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	l, err := f.cfg.Client.Grant(ctx, int64(LeaseTTL/time.Second))
	if err != nil {
		return 0, nil, err
	}
	ch, err := f.cfg.Client.KeepAlive(f.ctx, l.ID)
	if err != nil {
		return 0, nil, err
	}
	return l.ID, ch, nil
}

func (f *Fleet) put(lease clientv3.LeaseID, cluster string, n int) error {
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	k := f.prefix() + cluster + "/" + f.cfg.ReplicaID
	if n == 0 {
		_, err := f.cfg.Client.Delete(ctx, k)
		return err
	}
	v, _ := json.Marshal(record{URL: f.cfg.PeerURL, Tunnels: n})
	_, err := f.cfg.Client.Put(ctx, k, string(v), clientv3.WithLease(lease))
	return err
}

// load reads every record, and watch follows them.
func (f *Fleet) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := f.cfg.Client.Get(ctx, f.prefix(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("fleet: read tunnel ownership: %w", err)
	}
	f.mu.Lock()
	clear(f.owners)
	for _, kv := range r.Kvs {
		f.apply(string(kv.Key), kv.Value, false)
	}
	f.mu.Unlock()
	f.rev = r.Header.Revision
	return nil
}

// apply sets one record; f.mu is held.
func (f *Fleet) apply(key string, value []byte, deleted bool) {
	rest := strings.TrimPrefix(key, f.prefix())
	cluster, replica, ok := strings.Cut(rest, "/")
	if !ok || replica == f.cfg.ReplicaID {
		return
	}
	if deleted {
		delete(f.owners[cluster], replica)
		if len(f.owners[cluster]) == 0 {
			delete(f.owners, cluster)
		}
		return
	}
	var rec record
	if json.Unmarshal(value, &rec) != nil || rec.URL == "" {
		return
	}
	m := f.owners[cluster]
	if m == nil {
		m = map[string]owner{}
		f.owners[cluster] = m
	}
	m[replica] = owner{replica: replica, url: rec.URL, tunnels: rec.Tunnels}
}

func (f *Fleet) watch() {
	for f.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(f.ctx))
		for resp := range f.cfg.Client.Watch(wctx, f.prefix(), clientv3.WithPrefix(), clientv3.WithRev(f.rev+1)) {
			if resp.Err() != nil {
				f.log.Warn("fleet: ownership watch broke; reading again", "err", resp.Err())
				break
			}
			f.mu.Lock()
			for _, ev := range resp.Events {
				f.apply(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
			}
			f.mu.Unlock()
			f.rev = resp.Header.Revision
		}
		cancel()
		for f.ctx.Err() == nil {
			if err := f.load(f.ctx); err == nil {
				break
			}
			if !sleep(f.ctx, time.Second) {
				return
			}
		}
	}
}

// Peers returns the other replicas' tunnels of cluster, by replica ID, as
// their ownership records say.
func (f *Fleet) Peers(cluster string) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.owners[cluster]))
	for _, o := range f.owners[cluster] {
		out[o.replica] = o.tunnels
	}
	return out
}

// Owners returns the other replicas holding tunnels of cluster, most
// tunnels first.
func (f *Fleet) Owners(cluster string) []string {
	f.mu.Lock()
	os := make([]owner, 0, len(f.owners[cluster]))
	for _, o := range f.owners[cluster] {
		os = append(os, o)
	}
	f.mu.Unlock()
	sort.Slice(os, func(i, j int) bool {
		if os[i].tunnels != os[j].tunnels {
			return os[i].tunnels > os[j].tunnels
		}
		return os[i].replica < os[j].replica
	})
	out := make([]string, len(os))
	for i, o := range os {
		out[i] = o.url
	}
	return out
}

type forwardKey struct{}

type forward struct {
	owners    []string
	principal string
	cluster   string
	// byHost: the request named the cluster by host, not by path.
	byHost bool
	client string // the caller's IP address, as this replica saw it
}

// Forward proxies r (already admitted for c) to a replica that
// holds a tunnel of cluster, streaming both ways, upgrades included. prefix
// is the /clusters/<name> part of the path, empty when the cluster was
// named by host (the owner gets the path form either way). It reports
// false, having written nothing, when no other replica has one.
func (f *Fleet) Forward(w http.ResponseWriter, r *http.Request, cluster, prefix string, c dataplane.Caller) bool {
	owners := f.Owners(cluster)
	if len(owners) == 0 {
		return false
	}
	b, _ := json.Marshal(c.Principal)
	fw := &forward{owners: owners, principal: base64.RawURLEncoding.EncodeToString(b), cluster: cluster, byHost: prefix == "",
		client: ForwardedClientOf(c.Client)}
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw)))
	return true
}

// nextOwner sends a request to the first owner that accepts a connection:
// a dial that fails (the owner died; its record has not expired yet) sent
// nothing, so the next one is tried.
type nextOwner struct {
	f  *Fleet
	tr *http.Transport
}

func (n *nextOwner) RoundTrip(req *http.Request) (*http.Response, error) {
	fw, _ := req.Context().Value(forwardKey{}).(*forward)
	if fw == nil {
		return nil, errors.New("fleet: not a forwarded request")
	}
	var errs []error
	for _, o := range fw.owners {
		u, err := url.Parse(o)
		if err != nil {
			continue
		}
		out := req.Clone(req.Context())
		if req.Body != nil && req.Body != http.NoBody {
			// A failed dial read nothing of the body, but the transport
			// closes what it was given: keep the real one for the next try.
			out.Body = io.NopCloser(req.Body)
		}
		out.URL.Scheme, out.URL.Host = "https", u.Host
		out.Host = u.Host
		if fw.byHost {
			out.URL.Path = api.ClusterProxyPrefix + fw.cluster + req.URL.Path
			if req.URL.RawPath != "" {
				out.URL.RawPath = api.ClusterProxyPrefix + fw.cluster + req.URL.RawPath
			}
		}
		out.Header.Set(api.HeaderForwardedPrincipal, fw.principal)
		if fw.client != "" {
			out.Header.Set(api.HeaderForwardedClient, fw.client)
		} else {
			out.Header.Del(api.HeaderForwardedClient)
		}
		resp, err := n.tr.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u.Host, err))
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			break // something was sent: not safe to send again
		}
		n.f.log.Info("fleet: owner unreachable; trying the next", "cluster", fw.cluster, "owner", u.Host, "err", err)
	}
	return nil, errors.Join(errs...)
}

func (f *Fleet) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	fw, _ := r.Context().Value(forwardKey{}).(*forward)
	cluster := ""
	if fw != nil {
		cluster = fw.cluster
	}
	f.log.Warn("fleet: forwarding failed", "cluster", cluster, "err", err)
	apistatus.Error(w, http.StatusServiceUnavailable, fmt.Sprintf("cluster %s is not connected to a reachable relay replica: its tunnels' replicas did not answer (%v); retry: agents reconnect within seconds", cluster, err))
}

// ForwardedClientOf is a caller's address as a forwarded request carries
// it: an IP address, or empty (none, or not an address).
func ForwardedClientOf(h string) string {
	if net.ParseIP(h) == nil {
		return ""
	}
	return h
}

// PrincipalOf decodes a forwarded principal header.
func PrincipalOf(h string) (api.Principal, error) {
	var p api.Principal
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return p, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return p, err
	}
	if p.Kind == "" || p.ID == "" || p.Kind == api.PrincipalKindPeer {
		return p, errors.New("no principal, or a peer")
	}
	return p, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
