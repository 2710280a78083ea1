// Command devcluster runs a real etcd and kube-apiserver on loopback for the
// demo (make demo), using the same harness as the tests, plus one node backed
// by the test kubelet and a Running Pod on it, until SIGTERM. The Pod's
// exec runs commands as local processes, its log gets a line every few
// seconds (and one per HTTP request), and port-forward to its port reaches
// a small HTTP page served here (see pod.go). When the apiserver and the
// Pod are ready it writes <dir>/cluster.env with the apiserver's URL, CA
// file and admin kubeconfig and the Pod's namespace, name and port, for the
// demo script to read.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubelet"
)

func main() {
	dir := flag.String("dir", ".demo/cluster", "working directory (certificates, etcd data, logs)")
	var extra []string
	flag.Func("apiserver-arg", "extra kube-apiserver argument, --name=value (repeatable)", func(v string) error {
		extra = append(extra, v)
		return nil
	})
	pod := &demoPod{container: "main"}
	flag.StringVar(&pod.namespace, "pod-namespace", "demo", "namespace of the demo Pod (created)")
	flag.StringVar(&pod.name, "pod-name", "hello", "name of the demo Pod")
	flag.DurationVar(&pod.tick, "pod-log-every", 3*time.Second, "how often the demo Pod logs a line")
	podAddr := flag.String("pod-listen", "127.0.0.1:18449", "address of the demo Pod's HTTP page; its port is the one to port-forward")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dir, extra, pod, *podAddr, log); err != nil {
		log.Error("devcluster failed", "err", err)
		os.Exit(1)
	}
}

func run(dir string, extra []string, pod *demoPod, podAddr string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := cluster.Start(sctx, &cluster.Options{Dir: dir, Logger: log, ExtraAPIServerArgs: extra})
	if err != nil {
		return err
	}
	defer c.Stop()
	// A node backed by the test kubelet, so that the cluster has a node to
	// count and exec/logs/port-forward have somewhere to go.
	k, err := kubelet.Start(sctx, log)
	if err != nil {
		return err
	}
	defer k.Stop()
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	const node = "demo-node"
	if err := k.RegisterNode(sctx, cs, node); err != nil {
		return err
	}
	pod.k, pod.log = k, log
	if err := pod.start(ctx, cs, node, podAddr); err != nil {
		return err
	}
	defer func() {
		// Before the kubelet stops: port-forwarded requests drain first.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = pod.shutdown(sctx)
	}()
	env := fmt.Sprintf("APISERVER_URL=%s\nAPISERVER_CA=%s\nADMIN_KUBECONFIG=%s\nPOD_NAMESPACE=%s\nPOD_NAME=%s\nPOD_PORT=%d\n",
		c.URL, c.CAFile, c.AdminKubeconfig, pod.namespace, pod.name, pod.port)
	if err := os.WriteFile(filepath.Join(dir, "cluster.env"), []byte(env), 0o600); err != nil {
		return err
	}
	log.Info("etcd and kube-apiserver are up", "url", c.URL)
	<-ctx.Done()
	log.Info("stopping kube-apiserver, then etcd")
	return nil
}
