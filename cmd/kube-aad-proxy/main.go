// Command kube-aad-proxy verifies Microsoft Entra ID tokens in front of the
// Kubernetes API server and impersonates their users; see aadproxy.Options
// for the flags and docs/aadproxy.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterconnect/clusterconnect/aadproxy"
)

func main() {
	o := aadproxy.NewOptions()
	fs := flag.NewFlagSet("kube-aad-proxy", flag.ExitOnError)
	o.Flags(fs)
	fs.Parse(os.Args[1:])
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "kube-aad-proxy: %v\n", err)
		os.Exit(2)
	}
	log := o.Log.New(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := aadproxy.Run(ctx, o, log, nil); err != nil {
		log.Error("kube-aad-proxy failed", "err", err)
		os.Exit(1)
	}
}
