// Package kubectl drives the real kubectl binary from tests: one-shot
// commands ([Run]), long-running ones with a stdin pipe and observable
// output ([Start]), and port-forwarding ([PortForward]).
//
// Every process is started with a context and is killed when the context
// ends; long-running processes must also be stopped with [Process.Stop].
package kubectl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BinaryEnv names the environment variable that overrides [DefaultBinary].
const BinaryEnv = "KUBECTL"

// DefaultBinary is the kubectl used unless $KUBECTL is set.
const DefaultBinary = "/usr/bin/kubectl"

// DefaultTimeout bounds a [Run] whose context has no deadline.
const DefaultTimeout = 2 * time.Minute

// killGrace is how long a stopped process gets between SIGTERM and SIGKILL,
// and how long Wait waits for output pipes after the process exited.
const killGrace = 3 * time.Second

// Binary returns the kubectl binary to run: $KUBECTL or /usr/bin/kubectl.
func Binary() string {
	if b := os.Getenv(BinaryEnv); b != "" {
		return b
	}
	return DefaultBinary
}

// Protocol selects the streaming protocol kubectl uses for exec, attach,
// cp and port-forward.
type Protocol string

const (
	// WebSocket is the default of kubectl 1.31 and later.
	WebSocket Protocol = "websocket"
	// SPDY is the legacy protocol, forced through environment variables.
	SPDY Protocol = "spdy"
)

// Protocols lists both protocols, for table-driven tests.
func Protocols() []Protocol { return []Protocol{WebSocket, SPDY} }

// Env returns the environment variables that make kubectl use p.
func (p Protocol) Env() []string {
	v := "true"
	if p == SPDY {
		v = "false"
	}
	return []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=" + v, "KUBECTL_PORT_FORWARD_WEBSOCKETS=" + v}
}

// UpgradeHeader returns the value of the Upgrade response header with
// which the apiserver accepts a streaming request of protocol p:
// "websocket" or "SPDY/3.1" (WebSocket port-forwarding tunnels SPDY inside
// a WebSocket, so it is "websocket" as well).
func (p Protocol) UpgradeHeader() string {
	if p == SPDY {
		return "SPDY/3.1"
	}
	return "websocket"
}

// VerboseArg makes kubectl log response headers on stderr, so that
// [Upgrades] can tell which streaming protocol it really used: kubectl
// silently falls back from WebSocket to SPDY when the WebSocket upgrade
// fails.
const VerboseArg = "-v=8"

var upgradeRE = regexp.MustCompile(`(?m)^\S+ +\S+ +\d+ round_trippers\.go:\d+\]\s+Upgrade: (\S+)\s*$`)

// Upgrades returns the values of the Upgrade response headers in the
// stderr of a kubectl run with [VerboseArg], in order; for example
// ["websocket"] or ["SPDY/3.1"].
func Upgrades(stderr string) []string {
	var out []string
	for _, m := range upgradeRE.FindAllStringSubmatch(stderr, -1) {
		out = append(out, m[1])
	}
	return out
}

// command builds a kubectl command. The environment is the test's own minus
// KUBECONFIG, plus env; kubeconfig is passed with --kubeconfig.
func command(ctx context.Context, kubeconfig string, env []string, args []string) *exec.Cmd {
	full := append([]string{"--kubeconfig=" + kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, Binary(), full...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = killGrace
	return cmd
}

// Error is returned when kubectl fails. It wraps the *exec.ExitError (use
// errors.As) or the error that kept kubectl from running.
type Error struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("kubectl %s: %v; stderr:\n%s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode returns kubectl's exit code, or -1 if err does not come from a
// kubectl that exited.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Run runs kubectl --kubeconfig=kubeconfig args... with env added to the
// environment and stdin (may be nil) as standard input, and returns its
// output. A non-zero exit gives an *Error wrapping *exec.ExitError. Without
// a deadline on ctx, DefaultTimeout applies.
func Run(ctx context.Context, kubeconfig string, env []string, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var out, errOut bytes.Buffer
	cmd := command(ctx, kubeconfig, env, args)
	cmd.Stdin = stdin
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (killed: %w)", err, ctx.Err())
		}
		return out.String(), errOut.String(), &Error{Args: args, Stderr: errOut.String(), Err: err}
	}
	return out.String(), errOut.String(), nil
}

// Process is a running kubectl started by [Start].
type Process struct {
	// Stdin is the write end of kubectl's standard input; close it to send
	// EOF.
	Stdin io.WriteCloser

	args     []string
	cmd      *exec.Cmd
	stdout   *watchedBuffer
	stderr   *watchedBuffer
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// Start starts kubectl --kubeconfig=kubeconfig args... in the background,
// with env added to the environment and a pipe as standard input. The
// process is killed when ctx ends; call Stop when done with it.
func Start(ctx context.Context, kubeconfig string, env []string, args ...string) (*Process, error) {
	p := &Process{
		args:   args,
		stdout: newWatchedBuffer(),
		stderr: newWatchedBuffer(),
		done:   make(chan struct{}),
	}
	p.cmd = command(ctx, kubeconfig, env, args)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("kubectl %s: stdin pipe: %w", strings.Join(args, " "), err)
	}
	p.Stdin = stdin
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kubectl %s (is %s installed? set $%s): %w", strings.Join(args, " "), Binary(), BinaryEnv, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		p.stdout.closeWith()
		p.stderr.closeWith()
		close(p.done)
	}()
	return p, nil
}

// Stdout returns what kubectl wrote to standard output so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what kubectl wrote to standard error so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitForStdout waits until standard output contains substr, and fails if
// the process exits first or ctx ends.
func (p *Process) WaitForStdout(ctx context.Context, substr string) error {
	return p.waitFor(ctx, p.stdout, "stdout", func(s string) bool { return strings.Contains(s, substr) }, fmt.Sprintf("%q", substr))
}

// WaitForStderr is WaitForStdout for standard error.
func (p *Process) WaitForStderr(ctx context.Context, substr string) error {
	return p.waitFor(ctx, p.stderr, "stderr", func(s string) bool { return strings.Contains(s, substr) }, fmt.Sprintf("%q", substr))
}

func (p *Process) waitFor(ctx context.Context, b *watchedBuffer, name string, ok func(string) bool, what string) error {
	for {
		s, changed, closed := b.snapshot()
		if ok(s) {
			return nil
		}
		if closed {
			return p.errorf("exited before %s showed %s: %v", name, what, p.waitErr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return p.errorf("%s did not show %s: %w", name, what, ctx.Err())
		}
	}
}

func (p *Process) errorf(format string, args ...any) error {
	return fmt.Errorf("kubectl %s: %w\nstdout:\n%s\nstderr:\n%s", strings.Join(p.args, " "),
		fmt.Errorf(format, args...), p.Stdout(), p.Stderr())
}

// Wait waits for the process to exit by itself and returns its error (an
// *Error wrapping *exec.ExitError for a non-zero exit). If ctx ends first,
// the process is stopped and ctx's error returned.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		p.Stop()
		return p.errorf("did not exit: %w", ctx.Err())
	}
	if p.waitErr != nil {
		return &Error{Args: p.args, Stderr: p.Stderr(), Err: p.waitErr}
	}
	return nil
}

// Stop ends the process (SIGTERM, then SIGKILL after a few seconds) and
// waits for it. It is idempotent and safe after the process has exited.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		p.Stdin.Close()
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		t := time.NewTimer(killGrace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
}

// PortForwarding is a running `kubectl port-forward`.
type PortForwarding struct {
	*Process
	// LocalPort is the port kubectl listens on at 127.0.0.1.
	LocalPort int
	// LocalAddr is "127.0.0.1:<LocalPort>".
	LocalAddr string
}

var forwardingRE = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)`)

// PortForward starts `kubectl port-forward -n namespace pod/<pod>
// :remotePort --address=127.0.0.1 extraArgs...` and waits for the
// "Forwarding from 127.0.0.1:NNNN" line. Stop the result when done.
func PortForward(ctx context.Context, kubeconfig string, env []string, namespace, pod string, remotePort int, extraArgs ...string) (*PortForwarding, error) {
	args := append([]string{"port-forward", "-n", namespace, "pod/" + pod,
		":" + strconv.Itoa(remotePort), "--address=127.0.0.1"}, extraArgs...)
	p, err := Start(ctx, kubeconfig, env, args...)
	if err != nil {
		return nil, err
	}
	var port int
	err = p.waitFor(ctx, p.stdout, "stdout", func(s string) bool {
		m := forwardingRE.FindStringSubmatch(s)
		if m == nil {
			return false
		}
		port, _ = strconv.Atoi(m[1])
		return true
	}, "a 'Forwarding from 127.0.0.1:NNNN' line")
	if err != nil {
		p.Stop()
		return nil, err
	}
	return &PortForwarding{Process: p, LocalPort: port, LocalAddr: "127.0.0.1:" + strconv.Itoa(port)}, nil
}

// watchedBuffer is a goroutine-safe buffer whose changes can be awaited.
type watchedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
	closed  bool
}

func newWatchedBuffer() *watchedBuffer { return &watchedBuffer{changed: make(chan struct{})} }

func (b *watchedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *watchedBuffer) closeWith() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *watchedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshot returns the content, a channel closed on the next change, and
// whether the writer is gone.
func (b *watchedBuffer) snapshot() (string, <-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.changed, b.closed
}
