// Command relay is the cloud side of cluster connect: agents dial in, kubectl
// reaches their clusters at /clusters/<name>/, and the management API
// registers clusters. See relay.Options for the flags.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/clusterconnect/clusterconnect/pkg/command"
	"github.com/clusterconnect/clusterconnect/relay"
)

func main() {
	o := relay.NewOptions()
	os.Exit(command.Main("relay", os.Args[1:], o, func(ctx context.Context, log *slog.Logger) error {
		return relay.Run(ctx, o, log, nil)
	}))
}
