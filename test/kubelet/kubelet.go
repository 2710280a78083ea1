// Package kubelet is a minimal test kubelet: an HTTPS server on 127.0.0.1
// that serves the kubelet streaming endpoints the apiserver proxies to
// (exec, attach, portForward, containerLogs) with the real kubelet
// streaming code from k8s.io/cri-streaming, but without a container
// runtime:
//
//   - exec runs the command as a local process (no pty; a TTY request just
//     drops stderr); a non-zero exit code reaches the client as such;
//   - attach echoes the client's stdin to stdout until stdin closes;
//   - portForward dials 127.0.0.1:<port> on this host and pipes the bytes;
//   - containerLogs serves lines added with [Kubelet.AppendLog], and with
//     follow=true keeps streaming new lines.
//
// [Kubelet.RegisterNode] and [RunPod] create the Node and a Running Pod
// objects that make the apiserver send those requests here.
package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	// streamIdleTimeout closes a streaming connection without traffic.
	streamIdleTimeout = 30 * time.Minute
	// streamCreationTimeout bounds how long a client may take to open the
	// streams of an exec/attach/port-forward session.
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
	// execWaitDelay bounds how long an exec waits for output pipes after
	// the process exited (e.g. held open by a background grandchild).
	execWaitDelay = 2 * time.Second
)

// Kubelet is a running test kubelet.
type Kubelet struct {
	// Addr is the listen address, 127.0.0.1:<Port>.
	Addr string
	// Port is the HTTPS port, for status.daemonEndpoints.kubeletEndpoint.
	Port int

	logger *slog.Logger
	srv    *http.Server
	ln     net.Listener
	ctx    context.Context // canceled by Stop; parent of every request
	cancel context.CancelFunc
	served chan struct{} // closed when Serve returned

	mu       sync.Mutex
	stopped  bool
	handlers sync.WaitGroup
	hijacked map[net.Conn]struct{}

	logs *logStore

	stopOnce sync.Once
	stopErr  error
}

// Start starts a kubelet on a free port of 127.0.0.1 with a fresh
// self-signed certificate (the apiserver does not verify kubelet
// certificates unless --kubelet-certificate-authority is set). ctx is only
// used for starting; the kubelet runs until Stop. A nil logger discards.
func Start(ctx context.Context, logger *slog.Logger) (*Kubelet, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start test kubelet: %w", err)
	}
	cert, err := selfSignedCert()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("test kubelet: listen on 127.0.0.1: %w", err)
	}
	k := &Kubelet{
		Addr:     ln.Addr().String(),
		Port:     ln.Addr().(*net.TCPAddr).Port,
		logger:   logger,
		ln:       ln,
		served:   make(chan struct{}),
		hijacked: map[net.Conn]struct{}{},
		logs:     newLogStore(),
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())

	mux := http.NewServeMux()
	for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, k.serveExec)
		mux.HandleFunc("POST "+p, k.serveExec)
	}
	for _, p := range []string{"/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, k.serveAttach)
		mux.HandleFunc("POST "+p, k.serveAttach)
	}
	for _, p := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
		mux.HandleFunc("GET "+p, k.servePortForward)
		mux.HandleFunc("POST "+p, k.servePortForward)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", k.serveContainerLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

	k.srv = &http.Server{
		Handler:           k.track(mux),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return k.ctx },
		ConnState:         k.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		// HTTP/1.1 only: the streaming protocols upgrade the connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		},
	}
	go func() {
		defer close(k.served)
		if err := k.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("test kubelet server failed", "err", err)
		}
	}()
	logger.Info("test kubelet listening", "addr", k.Addr)
	return k, nil
}

// track counts running handlers so Stop can wait for them, and refuses new
// requests once Stop began.
func (k *Kubelet) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		if k.stopped {
			k.mu.Unlock()
			http.Error(w, "test kubelet is stopping", http.StatusServiceUnavailable)
			return
		}
		k.handlers.Add(1)
		k.mu.Unlock()
		defer k.handlers.Done()
		k.logger.Debug("test kubelet request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery)
		h.ServeHTTP(w, r)
		// An upgraded connection belongs to its handler, which is done.
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			k.mu.Lock()
			_, hijacked := k.hijacked[c]
			delete(k.hijacked, c)
			k.mu.Unlock()
			if hijacked {
				c.Close()
			}
		}
	})
}

// connKey is the request context key of the request's connection.
type connKey struct{}

// connState remembers hijacked (upgraded) connections, which http.Server
// no longer manages, so that Stop can close them.
func (k *Kubelet) connState(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		c.Close()
		return
	}
	k.hijacked[c] = struct{}{}
}

// Stop closes the listener and every connection, including active
// exec/attach/port-forward streams and log follows, kills processes
// started by exec, and waits for all handlers to return. It is idempotent.
func (k *Kubelet) Stop() error {
	k.stopOnce.Do(func() {
		k.mu.Lock()
		k.stopped = true
		conns := k.hijacked
		k.hijacked = nil
		k.mu.Unlock()

		k.cancel()
		k.stopErr = k.srv.Close()
		for c := range conns {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			c.Close()
		}
		k.handlers.Wait()
		<-k.served
		if k.stopErr != nil {
			k.stopErr = fmt.Errorf("stop test kubelet %s: %w", k.Addr, k.stopErr)
		}
		k.logger.Info("test kubelet stopped", "addr", k.Addr)
	})
	return k.stopErr
}

// podRef identifies the target of a streaming call.
type podRef struct{ namespace, pod, uid, container string }

func (p podRef) fullName() string { return p.namespace + "/" + p.pod }

func refOf(r *http.Request) podRef {
	return podRef{r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid"), r.PathValue("container")}
}

func (k *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ref := refOf(r)
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "query parameter \"command\" is required", http.StatusBadRequest)
		return
	}
	remotecommand.ServeExec(w, r, &executor{k: k, ref: ref}, ref.fullName(), ref.uid, ref.container, cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (k *Kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ref := refOf(r)
	remotecommand.ServeAttach(w, r, &executor{k: k, ref: ref}, ref.fullName(), ref.uid, ref.container, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (k *Kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ref := refOf(r)
	portforward.ServePortForward(w, r, &executor{k: k, ref: ref}, ref.fullName(), ref.uid, opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// executor implements remotecommand.Executor, remotecommand.Attacher and
// portforward.PortForwarder for one request.
type executor struct {
	k   *Kubelet
	ref podRef
}

var (
	_ remotecommand.Executor    = (*executor)(nil)
	_ remotecommand.Attacher    = (*executor)(nil)
	_ portforward.PortForwarder = (*executor)(nil)
)

// drainResize consumes terminal resize events, which are ignored.
func drainResize(resize <-chan remotecommand.TerminalSize) {
	if resize != nil {
		go func() {
			for range resize { //nolint:revive // discard
			}
		}()
	}
}

// ExecInContainer runs cmd as a local process. Its environment has
// POD_NAMESPACE, POD_NAME and CONTAINER_NAME set to the request's target.
func (e *executor) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	drainResize(resize)
	ctx, cancel := mergeContexts(ctx, e.k.ctx)
	defer cancel()
	if timeout > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, timeout)
		defer cancelT()
	}
	e.k.logger.Info("exec", "pod", e.ref.fullName(), "container", e.ref.container, "cmd", cmd, "tty", tty)

	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Env = append(os.Environ(),
		"POD_NAMESPACE="+e.ref.namespace, "POD_NAME="+e.ref.pod, "CONTAINER_NAME="+e.ref.container)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = execWaitDelay
	if out != nil {
		c.Stdout = out
	}
	if errOut != nil {
		c.Stderr = errOut
	}
	var stdin io.WriteCloser
	if in != nil {
		var err error
		if stdin, err = c.StdinPipe(); err != nil {
			return fmt.Errorf("stdin pipe: %w", err)
		}
	}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %q: %w", cmd[0], err)
	}
	if stdin != nil {
		// Not waited for: it ends when the client's stdin stream ends,
		// which at the latest is when ServeExec closes the connection.
		go func() {
			_, _ = io.Copy(stdin, in)
			stdin.Close()
		}()
	}
	err := c.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		// ServeExec recognises exit codes by this interface only.
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return nil
	}
	return err
}

// AttachContainer echoes stdin to stdout until stdin closes. Without stdin
// it waits until the client or the kubelet goes away.
func (e *executor) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader, out, _ io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	drainResize(resize)
	e.k.logger.Info("attach", "pod", e.ref.fullName(), "container", e.ref.container, "tty", tty)
	if in == nil {
		select {
		case <-ctx.Done():
		case <-e.k.ctx.Done():
		}
		return nil
	}
	if out == nil {
		out = nopWriteCloser{io.Discard}
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, in)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-e.k.ctx.Done():
		return errors.New("test kubelet stopped")
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// PortForward connects stream with 127.0.0.1:port.
func (e *executor) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	ctx, cancel := mergeContexts(ctx, e.k.ctx)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	e.k.logger.Info("port-forward", "pod", e.ref.fullName(), "addr", addr)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()

	fromPod := make(chan error, 1)
	go func() {
		// Ends when the client's stream ends or the connection is closed.
		_, _ = io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		fromPod <- err
	}()
	select {
	case err := <-fromPod:
		return err
	case <-ctx.Done():
		return nil
	}
}

// mergeContexts returns a context canceled when either a or b is.
func mergeContexts(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// selfSignedCert returns a throwaway certificate for 127.0.0.1.
func selfSignedCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("test kubelet: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("test kubelet: generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "test-kubelet"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("test kubelet: create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
