// Command clusteragent runs the in-cluster agents of cluster connect; see
// clusteragent.Options for the flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterconnect/clusterconnect/clusteragent"
)

func main() {
	o := clusteragent.NewOptions()
	fs := flag.NewFlagSet("clusteragent", flag.ExitOnError)
	o.Flags(fs)
	fs.Parse(os.Args[1:])
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "clusteragent: %v\n", err)
		os.Exit(2)
	}
	log := o.Log.New(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := clusteragent.Run(ctx, o, log, nil); err != nil {
		log.Error("clusteragent failed", "err", err)
		os.Exit(1)
	}
}
