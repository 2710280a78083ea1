// Command relay is the cloud side of cluster connect: agents dial in, kubectl
// reaches their clusters at /clusters/<name>/, and the management API
// registers clusters. See relay.Options for the flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterconnect/clusterconnect/relay"
)

func main() {
	o := relay.NewOptions()
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	o.Flags(fs)
	fs.Parse(os.Args[1:])
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "relay: %v\n", err)
		os.Exit(2)
	}
	log := o.Log.New(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := relay.Run(ctx, o, log, nil); err != nil {
		log.Error("relay failed", "err", err)
		os.Exit(1)
	}
}
