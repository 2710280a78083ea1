package harness

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/test/proc"
)

// pollInterval is how often a wait looks again.
const pollInterval = 50 * time.Millisecond

// errNotYet is what a condition of poll returns while it does not hold.
var errNotYet = errors.New("not yet")

// poll calls cond until it returns nil, p (if not nil) exits, or ctx
// ends; cond's last error other than errNotYet goes into the returned one.
func poll(ctx context.Context, p *proc.Process, what string, cond func() error) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var last error
	for {
		// Whether p had exited is read before cond looks, so that what p
		// did before it exited is seen.
		exited := p != nil && p.Exited()
		err := cond()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNotYet) {
			last = err
		}
		if exited {
			return p.WithLog(fmt.Errorf("%s: %w", what, p.ExitErr()))
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), last)
			if p != nil {
				err = p.WithLog(err)
			}
			return err
		case <-t.C:
		}
	}
}

// WaitHTTP waits until url answers 200, p exits, ctx ends or 30 s pass.
// tlsCfg (nil: defaults) configures an https url.
func WaitHTTP(ctx context.Context, p *proc.Process, url string, tlsCfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	return poll(ctx, p, url+" not ready", func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	})
}

// WaitLog waits until p's log contains substr (anywhere in the file: a
// restarted process appends to the log of the one before), p exits, or
// ctx ends.
func WaitLog(ctx context.Context, p *proc.Process, substr string) error {
	return poll(ctx, p, fmt.Sprintf("log never said %q", substr), func() error {
		b, err := os.ReadFile(p.LogPath())
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), substr) {
			return errNotYet
		}
		return nil
	})
}

// freePort returns a port free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
