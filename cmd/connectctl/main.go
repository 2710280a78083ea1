// Command connectctl manages clusters connected to a clusterconnect relay.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/clusterconnect/clusterconnect/connectctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := connectctl.NewCommand(os.Stdout).ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
