package cluster

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

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// process is one started child process (etcd or kube-apiserver) in its own
// process group, with output going to a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once Wait returned
	waitErr error         // valid after done is closed
	logger  *slog.Logger
}

// startProcess starts bin with args in its own process group. Its stdout and
// stderr go to logPath. The process gets SIGKILL if the thread that started
// it (and so, in practice, the test binary) dies.
func startProcess(logger *slog.Logger, name, bin, logPath string, args []string) (*process, error) {
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
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{}), logger: logger}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	logger.Info("started process", "name", name, "pid", cmd.Process.Pid, "log", logPath)
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitErr describes how the process ended; call only after exited.
func (p *process) exitErr() error {
	<-p.done
	if p.waitErr == nil {
		return fmt.Errorf("%s exited with status 0", p.name)
	}
	return fmt.Errorf("%s exited: %w", p.name, p.waitErr)
}

// stop sends SIGTERM to the process group, waits up to stopGrace, then sends
// SIGKILL and waits for the exit. It is safe to call more than once.
func (p *process) stop() {
	if p == nil || p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	start := time.Now()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		// Kill leftovers in the group, if any.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	case <-t.C:
		p.logger.Warn("process did not stop after SIGTERM, sending SIGKILL", "name", p.name, "grace", stopGrace)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	p.logger.Info("stopped process", "name", p.name, "took", time.Since(start).Round(time.Millisecond))
}

// tail returns the last n lines of the process log, for error messages.
func (p *process) tail(n int) string {
	return tailFile(p.logPath, n)
}

func tailFile(path string, n int) string {
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

// withLog wraps err with the tail of the process log.
func (p *process) withLog(err error) error {
	return fmt.Errorf("%w\n--- last 40 lines of %s ---\n%s\n---", err, p.logPath, p.tail(40))
}

var errAddrInUse = errors.New("address already in use")

// addrInUse reports whether the process log says a port was taken, which
// means a free-port race and a reason to retry with new ports.
func (p *process) addrInUse() bool {
	return strings.Contains(p.tail(200), "address already in use")
}
