package harness

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/test/proc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shell starts sh -c script as a process whose log is in t's directory.
func shell(t *testing.T, script string) *proc.Process {
	t.Helper()
	p, err := proc.Start(slog.New(slog.DiscardHandler), "sh", "/bin/sh", filepath.Join(t.TempDir(), "sh.log"), []string{"-c", script})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func TestWaitLogSeesTheLine(t *testing.T) {
	p := shell(t, "sleep 0.2; echo starting; echo ready now; exec sleep 30")
	if err := WaitLog(TestContext(t), p, "ready now"); err != nil {
		t.Fatal(err)
	}
}

func TestWaitLogSeesTheLineOfAnExitedProcess(t *testing.T) {
	p := shell(t, "echo last words")
	<-p.Done()
	if err := WaitLog(TestContext(t), p, "last words"); err != nil {
		t.Fatal(err)
	}
}

func TestWaitLogEndsWhenTheProcessExits(t *testing.T) {
	p := shell(t, "echo something else; exit 3")
	start := time.Now()
	err := WaitLog(TestContext(t), p, "never printed")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "something else") {
		t.Fatalf("want the exit and the log tail in the error, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to notice the exit", d)
	}
}

func TestWaitLogEndsWithTheContext(t *testing.T) {
	p := shell(t, "exec sleep 30")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := WaitLog(ctx, p, "never"); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("got %v", err)
	}
}

func TestWaitHTTPWaitsFor200(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	p := shell(t, "exec sleep 30")
	if err := WaitHTTP(TestContext(t), p, srv.URL+"/readyz", nil); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
}

func TestNewDirNumbersRepeats(t *testing.T) {
	e := &Env{Dir: t.TempDir(), dirs: map[string]int{}}
	if err := os.Mkdir(filepath.Join(e.Dir, "guard-2"), 0o700); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		d, err := e.NewDir("guard")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, filepath.Base(d))
	}
	if strings.Join(got, " ") != "guard guard-3 guard-4" {
		t.Errorf("directories %v", got)
	}
}

func TestStopsRunLastFirst(t *testing.T) {
	e := &Env{}
	var order []int
	for i := range 3 {
		e.OnStop(func() { order = append(order, i) })
	}
	e.stopAll()
	e.stopAll() // nothing is run twice
	if len(order) != 3 || order[0] != 2 || order[2] != 0 {
		t.Errorf("stop order %v", order)
	}
}
