package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/guard/apiserverconfig"
	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/test/proc"
)

// GuardOptions configure [Env.NewGuard]. Issuer and Tenant are required.
type GuardOptions struct {
	// Dir holds guard's serving certificate and log; empty means a new
	// directory "guard" below Env.Dir.
	Dir string
	// Issuer issues the tokens guard's TokenReview verifies, for Tenant
	// and Audiences.
	Issuer    *Issuer
	Tenant    string
	Audiences []string
	// AllowedTTL and DeniedTTL are how long guard caches decisions; 0
	// means guard's defaults.
	AllowedTTL, DeniedTTL time.Duration
	// ExtraArgs are added after the harness's flags (--relay-failure-mode,
	// --skip-authz-group, …).
	ExtraArgs []string
}

// Guard is guard, the apiserver's authentication and authorization
// webhooks. Its ports and serving certificate are fixed by NewGuard, so
// that the apiserver can be configured for it ([Guard.APIServerFlags])
// before the process starts with the cluster's identity ([Guard.Start]).
type Guard struct {
	// URL serves the webhooks, with the certificate of TLS.
	URL string
	TLS certs.Files
	// HealthURL serves /readyz and /metrics.
	HealthURL string
	// Log is the process log.
	Log string
	// Proc is the running process, nil before Start.
	Proc *proc.Process

	port, health int
	opts         GuardOptions
	env          *Env
	// clientCA verifies the apiserver's webhook client certificate (from
	// guard config); empty for a guard no apiserver calls.
	clientCA string
}

// NewGuard picks guard's ports and makes its serving certificate; it
// starts nothing.
func (e *Env) NewGuard(opts GuardOptions) (*Guard, error) {
	dir, err := e.ensureDir(opts.Dir, "guard")
	if err != nil {
		return nil, err
	}
	g := &Guard{Log: filepath.Join(dir, "guard.log"), opts: opts, env: e}
	if g.port, err = freePort(); err != nil {
		return nil, err
	}
	if g.health, err = freePort(); err != nil {
		return nil, err
	}
	g.URL = "https://127.0.0.1:" + strconv.Itoa(g.port)
	g.HealthURL = "http://127.0.0.1:" + strconv.Itoa(g.health)
	if g.TLS, err = certs.EnsureDev(filepath.Join(dir, "tls"), []string{"127.0.0.1", "localhost"}); err != nil {
		return nil, err
	}
	return g, nil
}

// APIServerFlags runs `guard config` for this guard (webhook timeout 5 s,
// the apiserver's own cache 1 s either way, authorization failure policy
// failurePolicy: Deny or NoOpinion), writing its files to outDir, and
// returns the three kube-apiserver flags it prints.
func (g *Guard) APIServerFlags(ctx context.Context, outDir, failurePolicy string) ([]string, error) {
	cmd := exec.CommandContext(ctx, g.env.Binary("guard"), "config",
		"--url", g.URL, "--ca-file", g.TLS.CAFile, "--out-dir", outDir,
		"--timeout", "5s", "--authorized-ttl", "1s", "--unauthorized-ttl", "1s", "--failure-policy", failurePolicy)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("guard config: %w\n%s", err, b)
	}
	var flags []string
	for _, f := range strings.Fields(string(b)) {
		if strings.HasPrefix(f, "--") && strings.Contains(f, "=") {
			flags = append(flags, f)
		}
	}
	if len(flags) != 3 {
		return nil, fmt.Errorf("guard config printed %d flags:\n%s", len(flags), b)
	}
	g.clientCA = filepath.Join(outDir, apiserverconfig.ClientCAFile)
	return flags, nil
}

// Start runs guard, asking relay r's checkAccess as the cluster of id, and
// waits for its /readyz.
func (g *Guard) Start(ctx context.Context, r *Relay, id *Identity) error {
	o := g.opts
	args := []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(g.port),
		"--health-listen", "127.0.0.1:" + strconv.Itoa(g.health),
		"--tls-cert-file", g.TLS.CertFile, "--tls-key-file", g.TLS.KeyFile,
	}
	args = append(args, o.Issuer.VerifierArgs(o.Tenant, o.Audiences)...)
	args = append(args,
		"--relay-url", r.URL,
		"--client-cert-file", id.CertFile, "--client-key-file", id.KeyFile, "--relay-ca-file", id.CAFile,
		"--relay-timeout", "2s",
		"--shutdown-timeout", "2s",
		"--log-level", "debug")
	if g.clientCA != "" {
		args = append(args, "--webhook-client-ca-file", g.clientCA)
	} else {
		// Called directly by tests, never by an apiserver.
		args = append(args, "--allow-anonymous-webhook-clients")
	}
	if o.AllowedTTL > 0 {
		args = append(args, "--allowed-ttl", o.AllowedTTL.String())
	}
	if o.DeniedTTL > 0 {
		args = append(args, "--denied-ttl", o.DeniedTTL.String())
	}
	p, err := proc.Start(slog.New(slog.DiscardHandler), "guard", g.env.Binary("guard"), g.Log, append(args, o.ExtraArgs...))
	if err != nil {
		return fmt.Errorf("start guard: %w", err)
	}
	g.env.OnStop(p.Stop)
	g.Proc = p
	if err := WaitHTTP(ctx, p, g.HealthURL+"/readyz", nil); err != nil {
		p.Stop()
		return fmt.Errorf("start guard: %w", err)
	}
	return nil
}

// Stop stops the guard process; it is safe to call more than once.
func (g *Guard) Stop() { g.Proc.Stop() }
