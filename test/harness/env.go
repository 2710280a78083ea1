package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
)

// SetupTimeout bounds a suite's setup: the build, the cluster and what the
// setup function starts.
const SetupTimeout = 10 * time.Minute

// TestTimeout bounds the context of [TestContext].
const TestTimeout = 2 * time.Minute

// readyTimeout bounds each wait for a process to become ready.
const readyTimeout = 30 * time.Second

// Env is one test binary's environment: its working directory, the built
// binaries, the shared cluster and kubelet, and the stack of what to stop.
type Env struct {
	// Name names the suite in messages ("e2e/aad"); its last element
	// prefixes the namespaces of [Env.Namespace].
	Name string
	// Dir is the working directory: logs, certificates, state.
	Dir string
	// Bin is the directory of the binaries built from cmd/.
	Bin string
	// Cluster is the shared etcd + kube-apiserver, once StartCluster ran.
	Cluster *cluster.Cluster
	// Kubelet is the test kubelet, once StartKubelet ran, and NodeName
	// the Node it serves.
	Kubelet  *kubelet.Kubelet
	NodeName string
	// Logger receives the progress of the cluster and kubelet (warnings
	// and errors, to stderr).
	Logger *slog.Logger

	mu    sync.Mutex
	stops []func()
	dirs  map[string]int
	ns    atomic.Int64
}

// Main runs the suite's tests in an environment that setup completes, and
// exits: with goleak's verdict on leaked goroutines after everything was
// stopped, or 1 if setup failed.
func Main(m *testing.M, name string, setup func(ctx context.Context, env *Env) error) {
	goleak.VerifyTestMain(suite{m, name, setup})
}

type suite struct {
	m     *testing.M
	name  string
	setup func(context.Context, *Env) error
}

func (s suite) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), SetupTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "clusterconnect-"+strings.ReplaceAll(s.name, "/", "-")+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// connectctl kube-credential caches relay client certificates in the
	// user cache directory: keep the suite's own, gone with it (not
	// XDG_CACHE_HOME, which the Go build cache and the tools cache use).
	os.Setenv("CONNECTCTL_CACHE_DIR", filepath.Join(dir, "connectctl-cache"))
	env := &Env{
		Name:   s.name,
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		dirs:   map[string]int{},
	}
	keep := false
	defer func() {
		env.stopAll()
		if keep {
			fmt.Fprintf(os.Stderr, "%s: logs kept in %s\n", s.name, dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	if err := env.build(ctx); err != nil {
		keep = true
		fmt.Fprintf(os.Stderr, "%s setup: %v\n", s.name, err)
		return 1
	}
	if err := s.setup(ctx, env); err != nil {
		keep = true
		fmt.Fprintf(os.Stderr, "%s setup: %v\n", s.name, err)
		return 1
	}
	code := s.m.Run()
	keep = code != 0
	return code
}

// build builds every command under cmd/ into Dir/bin.
func (e *Env) build(ctx context.Context) error {
	root, err := cluster.FindModuleRoot()
	if err != nil {
		return err
	}
	e.Bin = filepath.Join(e.Dir, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", e.Bin+"/", "./cmd/...")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/...: %w\n%s", err, out)
	}
	return nil
}

// Binary is the path of the built command name ("connectctl").
func (e *Env) Binary(name string) string { return filepath.Join(e.Bin, name) }

// OnStop registers f to run when the environment stops, before what was
// registered earlier.
func (e *Env) OnStop(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stops = append(e.stops, f)
}

func (e *Env) stopAll() {
	for {
		e.mu.Lock()
		if len(e.stops) == 0 {
			e.mu.Unlock()
			return
		}
		f := e.stops[len(e.stops)-1]
		e.stops = e.stops[:len(e.stops)-1]
		e.mu.Unlock()
		f()
	}
}

// NewDir makes a new directory named after name below Dir (name, name-2,
// name-3, …) and returns its path.
func (e *Env) NewDir(name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		e.dirs[name]++
		p := filepath.Join(e.Dir, name)
		if n := e.dirs[name]; n > 1 {
			p += "-" + strconv.Itoa(n)
		}
		err := os.Mkdir(p, 0o700)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
}

// ensureDir returns dir, created, or a new directory named after name if
// dir is empty.
func (e *Env) ensureDir(dir, name string) (string, error) {
	if dir == "" {
		return e.NewDir(name)
	}
	return dir, os.MkdirAll(dir, 0o700)
}

// StartCluster starts etcd and kube-apiserver. nil opts means defaults;
// an empty Dir means Dir/cluster, and a nil Logger the Env's.
func (e *Env) StartCluster(ctx context.Context, opts *cluster.Options) error {
	o := cluster.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = e.Logger
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(e.Dir, "cluster")
	}
	c, err := cluster.Start(ctx, &o)
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	e.OnStop(func() { c.Stop() })
	e.Cluster = c
	return nil
}

// StartKubelet starts the test kubelet and registers it as Node nodeName
// of the cluster.
func (e *Env) StartKubelet(ctx context.Context, nodeName string) error {
	k, err := kubelet.Start(ctx, e.Logger)
	if err != nil {
		return fmt.Errorf("start kubelet: %w", err)
	}
	e.OnStop(func() { k.Stop() })
	e.Kubelet = k
	cs, err := e.Cluster.Clientset()
	if err != nil {
		return err
	}
	if err := k.RegisterNode(ctx, cs, nodeName); err != nil {
		return fmt.Errorf("register node %s: %w", nodeName, err)
	}
	e.NodeName = nodeName
	return nil
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// Namespace creates a namespace (with its default ServiceAccount) of its
// own for test t, named after the suite and the test.
func (e *Env) Namespace(t testing.TB, ctx context.Context) string {
	t.Helper()
	ns := nonName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "-")
	if len(ns) > 40 {
		ns = ns[:40]
	}
	ns = fmt.Sprintf("%s-%s-%d", path.Base(e.Name), strings.Trim(ns, "-"), e.ns.Add(1))
	if err := e.Cluster.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestContext is t's context bounded by TestTimeout.
func TestContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), TestTimeout)
	t.Cleanup(cancel)
	return ctx
}
