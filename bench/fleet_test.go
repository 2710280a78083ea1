package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/clusteragent/connect"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/relay/fleet"
	"github.com/clusterconnect/clusterconnect/relay/limits"
	"github.com/clusterconnect/clusterconnect/relay/store"
	"github.com/clusterconnect/clusterconnect/test/cluster"
)

// unlimited turns the relay's request limits off: one caller floods it on
// purpose.
var unlimited = limits.Config{CallerRate: -1, CallerBurst: -1, CallerConcurrent: -1, CallerLongRunning: -1,
	ClusterRate: -1, ClusterBurst: -1, ClusterConcurrent: -1, ClusterLongRunning: -1}

// fleetPaths is two relay replicas on one real etcd (a single member: the
// store's latency is not what is measured) with the agent's two tunnels on
// the second: kubectl's requests through the second are the owner's direct
// path, through the first they are forwarded to the owner over mTLS, as a
// fleet behind a load balancer forwards whatever lands on a replica without
// the cluster's tunnels.
func fleetPaths(u *upstreams, p *pki) (owner, forwarded *httpPath, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	var closers []func()
	cleanup := func() {
		cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	dir, err := os.MkdirTemp("", "bench-fleet-")
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, func() { os.RemoveAll(dir) })
	etcd, err := cluster.StartEtcd(ctx, cluster.EtcdOptions{Members: 1, Dir: dir})
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: %w", err)
	}
	closers = append(closers, etcd.Stop)
	ca, err := newClusterCA()
	if err != nil {
		return nil, nil, err
	}
	var servers []*relay.Server
	var urls []string
	for i := range 2 {
		st, err := store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: etcd.Endpoints, CertFile: etcd.ClientCert,
			KeyFile: etcd.ClientKey, CAFile: etcd.CAFile, Prefix: "/bench/"})
		if err != nil {
			return nil, nil, fmt.Errorf("etcd store: %w", err)
		}
		closers = append(closers, func() { st.Close() })
		if i == 0 {
			if err := st.CreateCluster(ctx, &store.Cluster{Name: "bench", UID: "bench", CreatedAt: time.Now()}); err != nil {
				return nil, nil, err
			}
		}
		// The server starts first: its URL is the replica's peer URL.
		var h http.Handler
		srv := p.startTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }), true)
		closers = append(closers, srv.Close)
		id := fmt.Sprintf("bench-%d", i)
		fl, err := fleet.Start(ctx, fleet.Config{Client: st.Client(), Prefix: st.Prefix(), ReplicaID: id, PeerURL: srv.URL,
			CA: ca, RootCAs: p.pool, ServerName: "127.0.0.1"})
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, fl.Stop)
		rs, err := relay.New(relay.Config{Fleet: fl, Replica: id, Store: st, ExternalURL: "https://127.0.0.1", AdminToken: "bench",
			ClusterCA: ca, Agents: allowAll{}, Limits: &unlimited})
		if err != nil {
			return nil, nil, err
		}
		h = rs
		closers = append(closers, func() {
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			rs.Shutdown(sctx)
			scancel()
		})
		servers, urls = append(servers, rs), append(urls, srv.URL)
	}
	const tunnels = 2
	a, err := connect.New(connect.Config{RelayURL: urls[1], Cluster: "bench", Tunnels: tunnels,
		Targets:     map[string]connect.Upstream{api.KubeTarget: {URL: "tcp://" + u.http}},
		RelayCAFile: p.caFile, DrainTimeout: 50 * time.Millisecond})
	if err != nil {
		return nil, nil, err
	}
	var wg sync.WaitGroup
	actx, acancel := context.WithCancel(ctx)
	wg.Go(func() { a.Run(actx) })
	closers = append(closers, func() { acancel(); wg.Wait() })
	if err := waitFor(func() bool { return servers[1].Connected("bench") == tunnels }); err != nil {
		return nil, nil, fmt.Errorf("fleet: %w", err)
	}
	cert, err := adminCert(ca)
	if err != nil {
		return nil, nil, err
	}
	c := httpClient(p, cert)
	closers = append(closers, c.CloseIdleConnections)
	// The first replica forwards once it has read the owner's record.
	if err := waitFor(func() bool {
		resp, err := c.Get(urls[0] + "/clusters/bench/bytes?n=1")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return nil, nil, errors.New("fleet: the first replica never forwarded to the owner")
	}
	var once sync.Once
	closeAll := func() { once.Do(cleanup) }
	owner = &httpPath{name: "fleet, owner's direct path", note: "two replicas on etcd; kubectl → the replica holding the tunnels → agent",
		base: urls[1] + "/clusters/bench", client: c, close: func() {}}
	forwarded = &httpPath{name: "fleet, forwarded", note: "kubectl → a replica without tunnels → mTLS → the owner → agent",
		base: urls[0] + "/clusters/bench", client: c, close: closeAll}
	return owner, forwarded, nil
}
