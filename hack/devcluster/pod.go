package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
)

// demoPod is the Pod the demo runs on its test-kubelet node, so that
// kubectl exec, logs -f and port-forward have something to reach. The test
// kubelet has no container runtime: exec runs the command as a local
// process, logs are the lines written here, and port-forward dials
// 127.0.0.1:<port>, where this program serves a small HTTP page.
type demoPod struct {
	namespace, name, container string
	// tick is how often a line is added to the Pod's log.
	tick time.Duration

	// port is the port of the HTTP page, set by start.
	port int

	k   *kubelet.Kubelet
	srv *http.Server
	log *slog.Logger
}

// start creates the namespace and the Running Pod on node, listens on addr
// (the port kubectl port-forward names) and adds log lines until ctx ends.
// Stop the HTTP server with shutdown.
func (p *demoPod) start(ctx context.Context, cs kubernetes.Interface, node, addr string) error {
	if p.tick <= 0 {
		return fmt.Errorf("demo pod: log interval must be positive, not %s", p.tick)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo pod: listen on %s (the port kubectl port-forward reaches): %w", addr, err)
	}
	if err := cluster.CreateNamespace(ctx, cs, p.namespace); err != nil {
		ln.Close()
		return err
	}
	if err := kubelet.RunPod(ctx, cs, p.namespace, p.name, node, p.container); err != nil {
		ln.Close()
		return err
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	p.appendLog("started on node %s; serving HTTP on %s (reach it with kubectl port-forward)", node, ln.Addr())

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Port-forwarded connections come from the kubelet, on loopback.
		p.appendLog("HTTP %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "hello from pod %s/%s, through relay, tunnel, agent, kube-apiserver and kubelet port-forward\n",
			p.namespace, p.name)
	})
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)}
	go func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("demo pod HTTP server failed", "err", err)
		}
	}()
	go func() {
		t := time.NewTicker(p.tick)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.appendLog("tick %d", n)
			}
		}
	}()
	p.log.Info("demo pod running", "pod", p.namespace+"/"+p.name, "node", node, "http", ln.Addr().String())
	return nil
}

func (p *demoPod) appendLog(format string, args ...any) {
	line := time.Now().UTC().Format(time.RFC3339) + " " + fmt.Sprintf(format, args...)
	p.k.AppendLog(p.namespace, p.name, p.container, line)
}

// shutdown stops the HTTP server, waiting at most until ctx ends.
func (p *demoPod) shutdown(ctx context.Context) error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Shutdown(ctx)
}
