// Package proc starts and stops the processes tests run (etcd,
// kube-apiserver, relay, agents): each in its own process group, output to a
// log file, killed if the test binary dies.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// StopGrace is how long a process gets between SIGTERM and SIGKILL.
const StopGrace = 5 * time.Second

// Process is one started child process (etcd or kube-apiserver) in its own
// process group, with output going to a log file.
type Process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once Wait returned
	waitErr error         // valid after done is closed
	logger  *slog.Logger
}

// Start starts bin with args in its own process group. Its stdout and
// stderr go to logPath. The process gets SIGKILL if the thread that started
// it (and so, in practice, the test binary) dies.
func Start(logger *slog.Logger, name, bin, logPath string, args []string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s log %s: %w", name, logPath, err)
	}
	defer logFile.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w; check that the binary exists and is executable", name, bin, err)
	}
	p := &Process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{}), logger: logger}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	logger.Info("started process", "name", name, "pid", cmd.Process.Pid, "log", logPath)
	return p, nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the process ID (and process group ID).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL to the process group and waits for the exit, as a crash
// or an OOM kill would end it.
func (p *Process) Kill() {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// ExitErr describes how the process ended; call only after exited.
func (p *Process) ExitErr() error {
	<-p.done
	if p.waitErr == nil {
		return fmt.Errorf("%s exited with status 0", p.name)
	}
	return fmt.Errorf("%s exited: %w", p.name, p.waitErr)
}

// Stop sends SIGTERM to the process group, waits up to StopGrace, then sends
// SIGKILL and waits for the exit. It is safe to call more than once.
func (p *Process) Stop() {
	if p == nil || p.Exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	start := time.Now()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(StopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		// Kill leftovers in the group, if any.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	case <-t.C:
		p.logger.Warn("process did not stop after SIGTERM, sending SIGKILL", "name", p.name, "grace", StopGrace)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	p.logger.Info("stopped process", "name", p.name, "took", time.Since(start).Round(time.Millisecond))
}

// LogPath is the file the process writes its output to.
func (p *Process) LogPath() string { return p.logPath }

// Tail returns the last n lines of the process log, for error messages.
func (p *Process) Tail(n int) string {
	return TailFile(p.logPath, n)
}

func TailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	data = bytes.TrimRight(data, "\n")
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WithLog wraps err with the tail of the process log.
func (p *Process) WithLog(err error) error {
	return fmt.Errorf("%w\n--- last 40 lines of %s ---\n%s\n---", err, p.logPath, p.Tail(40))
}

var ErrAddrInUse = errors.New("address already in use")

// AddrInUse reports whether the process log says a port was taken, which
// means a free-port race and a reason to retry with new ports.
func (p *Process) AddrInUse() bool {
	return strings.Contains(p.Tail(200), "address already in use")
}
