// Command devcluster runs a real etcd and kube-apiserver on loopback for the
// demo (make demo), using the same harness as the tests, plus one node backed
// by the test kubelet, until SIGTERM. When
// the apiserver is ready it writes <dir>/cluster.env with its URL, CA file and
// admin kubeconfig, for the demo script to read.
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
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dir, extra, log); err != nil {
		log.Error("devcluster failed", "err", err)
		os.Exit(1)
	}
}

func run(dir string, extra []string, log *slog.Logger) error {
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
	if err := k.RegisterNode(sctx, cs, "demo-node"); err != nil {
		return err
	}
	env := fmt.Sprintf("APISERVER_URL=%s\nAPISERVER_CA=%s\nADMIN_KUBECONFIG=%s\n", c.URL, c.CAFile, c.AdminKubeconfig)
	if err := os.WriteFile(filepath.Join(dir, "cluster.env"), []byte(env), 0o600); err != nil {
		return err
	}
	log.Info("etcd and kube-apiserver are up", "url", c.URL)
	<-ctx.Done()
	log.Info("stopping kube-apiserver, then etcd")
	return nil
}
