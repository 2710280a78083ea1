package entra_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

// countingTransport signals every discovery request.
type countingTransport struct {
	next      http.RoundTripper
	discovery chan string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
		c.discovery <- r.URL.Path
	}
	return resp, err
}

// warnings records the messages of warnings, and closes seen on the first
// that starts with want.
type warnings struct {
	want string
	seen chan struct{}

	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.want != "" && strings.HasPrefix(r.Message, w.want) {
		close(w.seen)
		w.want = ""
	}
	w.msgs = append(w.msgs, r.Message)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

func (w *warnings) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

func options(iss *oidc.Issuer) entra.Options {
	o := entra.DefaultOptions()
	o.IssuerURL, o.V1IssuerURL = iss.URL, iss.V1Base()
	o.Tenants, o.Audiences = []string{tenant}, []string{clientID, appIDURI}
	return o
}

// Start discovers both issuer forms in the background through the client
// of IssuerHTTPClient, which trusts --issuer-ca-file.
func TestStartWarmsUp(t *testing.T) {
	iss, err := oidc.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	o := options(iss)
	o.IssuerCAFile = filepath.Join(t.TempDir(), "issuer-ca.crt")
	if err := os.WriteFile(o.IssuerCAFile, iss.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := o.IssuerHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	ct := &countingTransport{next: client.Transport, discovery: make(chan string, 8)}
	client.Transport = ct
	warn := &warnings{}
	v, err := o.Start(t.Context(), &entra.StartConfig{HTTPClient: client, Logger: slog.New(warn)})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // v1 and v2 of the one tenant, before any token
		select {
		case <-ct.discovery:
		case <-time.After(10 * time.Second):
			t.Fatal("no discovery without a token")
		}
	}
	if _, err := v.Verify(t.Context(), iss.MustMint(good(2))); err != nil {
		t.Fatal(err)
	}
	if w := warn.list(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}

// With the issuer down Start still returns a verifier, and warns.
func TestStartIssuerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String()
	ln.Close()
	o := entra.DefaultOptions()
	o.IssuerURL, o.V1IssuerURL = down, down+"/sts"
	o.Tenants, o.Audiences = []string{tenant}, []string{clientID}
	warn := &warnings{want: "issuer discovery at startup failed", seen: make(chan struct{})}
	v, err := o.Start(t.Context(), &entra.StartConfig{Logger: slog.New(warn), WarmTimeout: 5 * time.Second})
	if err != nil || v == nil {
		t.Fatalf("Start = %v, %v; want a verifier", v, err)
	}
	select {
	case <-warn.seen:
	case <-time.After(10 * time.Second):
		t.Fatalf("no warning about the failed warm-up; warnings: %q", warn.list())
	}
}

// The errors about the CA file name its flag.
func TestIssuerCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	for file, want := range map[string]string{
		filepath.Join(dir, "missing.pem"): "--issuer-ca-file: read CA file",
		notPEM:                            "--issuer-ca-file: CA file " + notPEM + ": no PEM certificate",
	} {
		o := entra.DefaultOptions()
		o.Tenants, o.Audiences, o.IssuerCAFile = []string{tenant}, []string{clientID}, file
		if _, err := o.Start(t.Context(), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
	}
}
