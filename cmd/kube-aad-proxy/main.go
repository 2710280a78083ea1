// Command kube-aad-proxy verifies Microsoft Entra ID tokens in front of the
// Kubernetes API server and impersonates their users; see aadproxy.Options
// for the flags and docs/aadproxy.md.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/clusterconnect/clusterconnect/aadproxy"
	"github.com/clusterconnect/clusterconnect/pkg/command"
)

func main() {
	o := aadproxy.NewOptions()
	os.Exit(command.Main("kube-aad-proxy", os.Args[1:], o, func(ctx context.Context, log *slog.Logger) error {
		return aadproxy.Run(ctx, o, log, nil)
	}))
}
