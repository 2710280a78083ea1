package identity

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/kubernetes"

	"github.com/clusterconnect/clusterconnect/test/cluster"
)

func TestMain(m *testing.M) {
	// No ignores: the API server is stopped before the check.
	goleak.VerifyTestMain(withEnv{m})
}

// env is the real etcd and kube-apiserver, started on first use so that unit
// and fuzz runs do not pay for it.
var env struct {
	once sync.Once
	c    *cluster.Cluster
	cs   kubernetes.Interface
	err  error
}

type withEnv struct{ m *testing.M }

func (w withEnv) Run() int {
	code := w.m.Run()
	if env.c != nil {
		if err := env.c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop test cluster: %v\n", err)
		}
	}
	return code
}

// kube returns the shared API server's client and a new namespace for t.
func kube(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	env.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		env.c, env.err = cluster.Start(ctx, &cluster.Options{Logger: log})
		if env.err == nil {
			env.cs, env.err = env.c.Clientset()
		}
	})
	if env.err != nil {
		t.Fatalf("test cluster: %v", env.err)
	}
	ns := namespaceFor(t)
	if err := env.c.CreateNamespace(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return env.cs, ns
}

var nsCounter atomic.Int64

func namespaceFor(t *testing.T) string {
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-", "=", "-").Replace(t.Name()))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	return fmt.Sprintf("%s-%d", strings.Trim(ns, "-"), nsCounter.Add(1))
}

// logBuffer collects log output of several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs to t and, if buf is not nil, to buf.
func testLogger(t *testing.T, buf *logBuffer) *slog.Logger {
	var w io.Writer = tWriter{t}
	if buf != nil {
		w = io.MultiWriter(w, buf)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
