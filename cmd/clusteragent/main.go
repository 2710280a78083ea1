// Command clusteragent runs the in-cluster agents of cluster connect; see
// clusteragent.Options for the flags.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/clusterconnect/clusterconnect/clusteragent"
	"github.com/clusterconnect/clusterconnect/pkg/command"
)

func main() {
	o := clusteragent.NewOptions()
	os.Exit(command.Main("clusteragent", os.Args[1:], o, func(ctx context.Context, log *slog.Logger) error {
		return clusteragent.Run(ctx, o, log, nil)
	}))
}
