package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/connectctl"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

// RelayOptions configure [Env.StartRelay]; the zero value is valid.
type RelayOptions struct {
	// DataDir holds the relay's state, development CA, log, admin token
	// and connectctl config; empty means a new directory "relay" below
	// Env.Dir.
	DataDir string
	// Port is the port on 127.0.0.1; 0 means a free one.
	Port int
	// ExtraArgs are added after the harness's flags (for a flag given
	// twice, the last wins).
	ExtraArgs []string
}

// Relay is a relay process and what it takes to talk to it. A Relay
// literal with only URL and DataDir (holding ca.crt) names a relay that is
// no process of the harness, for [Env.StartAgent].
type Relay struct {
	// Proc is the running process, nil before Start.
	Proc *proc.Process
	// Port is its port on 127.0.0.1 and URL https://127.0.0.1:<Port>.
	Port int
	URL  string
	// HealthURL is its --health-listen: /readyz and /metrics.
	HealthURL string
	// DataDir is the relay's --data-dir.
	DataDir string
	// Config is connectctl's config file, logged in to this relay.
	Config string

	env        *Env
	extraArgs  []string
	kubeconfig atomic.Int64

	certMu sync.Mutex
	cert   *tls.Certificate // the admin's relay client certificate
}

// StartRelay starts a relay and waits until it is ready and connectctl is
// logged in to it.
func (e *Env) StartRelay(ctx context.Context, opts *RelayOptions) (*Relay, error) {
	var o RelayOptions
	if opts != nil {
		o = *opts
	}
	dir, err := e.ensureDir(o.DataDir, "relay")
	if err != nil {
		return nil, err
	}
	if o.Port == 0 {
		if o.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	healthPort, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Relay{
		Port:      o.Port,
		URL:       "https://127.0.0.1:" + strconv.Itoa(o.Port),
		HealthURL: "http://127.0.0.1:" + strconv.Itoa(healthPort),
		DataDir:   dir,
		Config:    filepath.Join(dir, "connectctl.yaml"),
		env:       e,
		extraArgs: o.ExtraArgs,
	}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Start starts the relay process (again, after Stop: same port, same
// state, its log appended to) and waits until /readyz answers and
// connectctl logged in.
func (r *Relay) Start(ctx context.Context) error {
	p, err := proc.Start(slog.New(slog.DiscardHandler), "relay", r.env.Binary("relay"), filepath.Join(r.DataDir, "relay.log"), append([]string{
		"--listen", "127.0.0.1:" + strconv.Itoa(r.Port),
		"--health-listen", strings.TrimPrefix(r.HealthURL, "http://"),
		"--data-dir", r.DataDir,
		"--external-url", r.URL,
		"--keepalive-interval", "1s", "--keepalive-timeout", "2s",
		"--shutdown-timeout", "3s",
		"--log-level", "debug",
	}, r.extraArgs...))
	if err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	r.Proc = p
	r.env.OnStop(p.Stop)
	if err := WaitHTTP(ctx, p, r.HealthURL+"/readyz", nil); err != nil {
		p.Stop()
		return fmt.Errorf("start relay: %w", err)
	}
	if _, err := r.Connectctl(ctx, "login", "--relay", r.URL, "--ca-file", r.CAFile(), "--token-file", r.adminTokenFile()); err != nil {
		p.Stop()
		return fmt.Errorf("start relay: %w", err)
	}
	return nil
}

// Stop stops the relay process (SIGTERM, then SIGKILL after
// proc.StopGrace); it is safe to call more than once.
func (r *Relay) Stop() { r.Proc.Stop() }

// CAFile is the relay's development CA, which agents and kubectl trust.
func (r *Relay) CAFile() string { return filepath.Join(r.DataDir, "ca.crt") }

func (r *Relay) adminTokenFile() string { return filepath.Join(r.DataDir, "admin-token") }

// AdminToken is the management API's admin bearer token.
func (r *Relay) AdminToken() (string, error) {
	b, err := os.ReadFile(r.adminTokenFile())
	return strings.TrimSpace(string(b)), err
}

// TLSConfig trusts the relay's CA (and nothing else).
func (r *Relay) TLSConfig() (*tls.Config, error) {
	ca, err := os.ReadFile(r.CAFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", r.CAFile())
	}
	return &tls.Config{RootCAs: pool}, nil
}

// Client is a management API client with the admin token.
func (r *Relay) Client() (*connectctl.Client, error) {
	tok, err := r.AdminToken()
	if err != nil {
		return nil, err
	}
	return connectctl.NewClient(r.URL, tok, r.CAFile())
}

// Connectctl runs the built connectctl with this relay's config file and
// returns its combined output; an error carries the output too.
func (r *Relay) Connectctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.env.Binary("connectctl"), args...)
	cmd.Env = append(os.Environ(), "CONNECTCTL_CONFIG="+r.Config)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("connectctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ConnectCluster registers cluster opts.Cluster with a registration token
// in opts.TokenFile (by default <DataDir>/<cluster>.token), starts an agent
// for it and, if opts.Tunnels > 0, waits until the relay counts that many
// tunnels.
func (r *Relay) ConnectCluster(ctx context.Context, opts AgentOptions) (*proc.Process, error) {
	opts.defaults(r)
	if _, err := r.Connectctl(ctx, "clusters", "create", opts.Cluster, "--token-file", opts.TokenFile); err != nil {
		return nil, err
	}
	a, err := r.env.StartAgent(ctx, r, opts)
	if err != nil {
		return nil, err
	}
	if opts.Tunnels > 0 {
		if err := r.WaitTunnels(ctx, opts.Cluster, opts.Tunnels); err != nil {
			a.Stop()
			return nil, a.WithLog(err)
		}
	}
	return a, nil
}

// WaitTunnels waits until the management API counts n tunnels of cluster
// name (or 30 s pass).
func (r *Relay) WaitTunnels(ctx context.Context, name string, n int) error {
	cl, err := r.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return poll(ctx, nil, fmt.Sprintf("cluster %s: want %d tunnels", name, n), func() error {
		v, err := cl.GetCluster(ctx, name)
		if err != nil {
			return err
		}
		if v.Properties.Tunnels != n {
			return fmt.Errorf("%d tunnels: %+v", v.Properties.Tunnels, v)
		}
		return nil
	})
}

// WaitGone waits until the management API answers 404 for cluster name
// (or 30 s pass).
func (r *Relay) WaitGone(ctx context.Context, name string) error {
	cl, err := r.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return poll(ctx, nil, fmt.Sprintf("cluster %s still known", name), func() error {
		_, err := cl.GetCluster(ctx, name)
		var ae *connectctl.APIError
		if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
			return nil
		}
		if err == nil {
			return errNotYet
		}
		return err
	})
}

// ClientCertificate is a relay client certificate of the admin (token
// mode's relay identity), from the management API as connectctl
// kube-credential gets it; it is fetched once per relay process.
func (r *Relay) ClientCertificate(ctx context.Context) (tls.Certificate, error) {
	r.certMu.Lock()
	defer r.certMu.Unlock()
	if r.cert != nil {
		return *r.cert, nil
	}
	cl, err := r.Client()
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	cr, err := cl.ClientCertificate(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay client certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair([]byte(cr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		return tls.Certificate{}, err
	}
	r.cert = &c
	return c, nil
}

// DataTLSConfig trusts the relay's CA and presents the admin's relay client
// certificate: what a request to a cluster through the relay needs besides
// the cluster's own bearer token.
func (r *Relay) DataTLSConfig(ctx context.Context) (*tls.Config, error) {
	cfg, err := r.TLSConfig()
	if err != nil {
		return nil, err
	}
	c, err := r.ClientCertificate(ctx)
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{c}
	return cfg, nil
}

// WaitReachable waits until GET /clusters/<name>/version through the
// relay, with bearer token and the admin's relay client certificate,
// answers 200: the whole data path (relay, tunnel, agent and whatever its
// upstream is) works. It gives up after 30 s.
func (r *Relay) WaitReachable(ctx context.Context, name, token string) error {
	cfg, err := r.DataTLSConfig(ctx)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return poll(ctx, nil, fmt.Sprintf("cluster %s not reachable through the relay", name), func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/clusters/"+name+"/version", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
		}
		return nil
	})
}

// Kubeconfig writes the relay-issued kubeconfig of cluster name with
// bearer token to a new file (with connectctl, as a user would) and
// returns its path.
func (r *Relay) Kubeconfig(ctx context.Context, name, token string) (string, error) {
	path := filepath.Join(r.DataDir, fmt.Sprintf("%s-%d.kubeconfig", name, r.kubeconfig.Add(1)))
	_, err := r.Connectctl(ctx, "kubeconfig", name, "--token", token, "--file", path)
	return path, err
}
