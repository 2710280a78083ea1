package fleet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/tunnel"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/fleet"
	"github.com/clusterconnect/clusterconnect/relay/store"
	"github.com/clusterconnect/clusterconnect/test/cluster"
)

type allowAgents struct{}

func (allowAgents) AuthenticateAgent(context.Context, *http.Request, *store.Cluster) (time.Time, error) {
	return time.Time{}, nil
}

// A request forwarded from one replica to the owner of the cluster's
// tunnels reaches the cluster with the caller's address in X-Forwarded-For
// (the apiserver's audit log records it), not the forwarding replica's, and
// without the fleet's own headers.
func TestForwardedRequestKeepsTheClient(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	etcd, err := cluster.StartEtcd(ctx, cluster.EtcdOptions{Members: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Stop()
	certPEM, keyPEM, err := clusterca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := clusterca.Load(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	type seen struct{ xff, principal, client string }
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- seen{r.Header.Get("X-Forwarded-For"), r.Header.Get(api.HeaderForwardedPrincipal), r.Header.Get(api.HeaderForwardedClient)}:
		default: // every request through shows the same
		}
	}))
	defer up.Close()

	var servers []*relay.Server
	var urls []string
	roots := x509.NewCertPool()
	for i := range 2 {
		st, err := store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: etcd.Endpoints, CertFile: etcd.ClientCert,
			KeyFile: etcd.ClientKey, CAFile: etcd.CAFile, Prefix: "/forward-test/"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if i == 0 {
			if err := st.CreateCluster(ctx, &store.Cluster{Name: "c1", UID: "c1", CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		var h http.Handler
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
		srv.StartTLS()
		defer srv.Close()
		if i == 0 {
			roots.AddCert(srv.Certificate()) // every httptest server serves this one
		}
		id := fmt.Sprintf("r%d", i)
		fl, err := fleet.Start(ctx, fleet.Config{Client: st.Client(), Prefix: st.Prefix(), ReplicaID: id, PeerURL: srv.URL,
			CA: ca, RootCAs: roots, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Stop()
		rs, err := relay.New(relay.Config{Fleet: fl, Replica: id, Store: st, ExternalURL: "https://127.0.0.1", AdminToken: "t",
			ClusterCA: ca, Agents: allowAgents{}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			defer scancel()
			rs.Shutdown(sctx)
		}()
		h = rs
		servers, urls = append(servers, rs), append(urls, srv.URL)
	}
	// The agent's tunnel is on the second replica only.
	agent, err := tunnel.NewClient(tunnel.ClientOptions{URL: urls[1] + api.TunnelPath("c1"), Tunnels: 1,
		Dial: tunnel.DialOptions{TLSConfig: &tls.Config{RootCAs: roots}},
		Targets: tunnel.Targets{api.KubeTarget: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", up.Listener.Addr().String())
		}}})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { agent.Run(actx) })
	defer wg.Wait()
	defer acancel()

	// The admin's relay client certificate, from 127.0.0.2: the replicas
	// reach each other from 127.0.0.1.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	pemCert, leaf, err := ca.IssuePrincipal(csr, api.Principal{Kind: api.PrincipalKindAdmin, ID: "admin"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemCert)
	c := &http.Client{Transport: &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{{Certificate: [][]byte{blk.Bytes}, PrivateKey: key, Leaf: leaf}}},
	}}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, urls[0]+"/clusters/c1/version", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9") // a client's claim: replaced
		req.Header.Set(api.HeaderForwardedClient, "203.0.113.9")
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no forwarded answer through the first replica (last: %v, %v)", resp, err)
		}
		time.Sleep(50 * time.Millisecond) // until the first replica has read the owner's record
	}
	if servers[0].Connected("c1") != 0 {
		t.Fatal("the first replica holds a tunnel: the request was not forwarded")
	}
	s := <-got
	if s.xff != "127.0.0.2" || s.principal != "" || s.client != "" {
		t.Errorf("the cluster saw X-Forwarded-For %q, %s %q, %s %q; want 127.0.0.2 and neither fleet header",
			s.xff, api.HeaderForwardedPrincipal, s.principal, api.HeaderForwardedClient, s.client)
	}
}
