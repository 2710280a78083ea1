// Command devfleet is the demo's fleet backbone (make demo RELAYS=3): a
// real etcd cluster on loopback with TLS (members verify each other, the
// relays present a client certificate) and a TCP load balancer in front of
// the relay replicas, which the agent dials as it would a fleet's one name.
// It writes <dir>/fleet.env (endpoints and certificate paths) once etcd is
// healthy, and runs until SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/harness"
)

func main() {
	dir := flag.String("dir", ".demo/etcd", "working directory (certificates, member data, logs)")
	members := flag.Int("members", 3, "etcd members")
	listen := flag.String("balancer-listen", "127.0.0.1:18470", "address of the load balancer in front of the relays")
	backends := flag.String("relays", "", "comma-separated host:port of the relay replicas behind the load balancer")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dir, *members, *listen, strings.Split(*backends, ","), log); err != nil {
		log.Error("devfleet failed", "err", err)
		os.Exit(1)
	}
}

func run(dir string, members int, listen string, backends []string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	e, err := cluster.StartEtcd(sctx, cluster.EtcdOptions{Members: members, Dir: dir, Logger: log})
	if err != nil {
		return err
	}
	defer e.Stop()
	lb, err := harness.NewBalancer(listen, backends)
	if err != nil {
		return err
	}
	defer lb.Stop()
	env := fmt.Sprintf("ETCD_ENDPOINTS=%s\nETCD_CA=%s\nETCD_CERT=%s\nETCD_KEY=%s\nBALANCER_URL=%s\n",
		strings.Join(e.Endpoints, ","), e.CAFile, e.ClientCert, e.ClientKey, lb.URL)
	if err := os.WriteFile(filepath.Join(dir, "fleet.env"), []byte(env), 0o600); err != nil {
		return err
	}
	log.Info("fleet backbone ready", "etcd", e.Endpoints, "balancer", lb.URL)
	<-ctx.Done()
	return nil
}
