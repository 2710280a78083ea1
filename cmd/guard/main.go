// Command guard is the Kubernetes API server's authentication and
// authorization webhook for Entra users, deciding with the relay's role
// assignments; see guard.Options for the flags and docs/guard.md.
//
//	guard [flags]          serve the webhooks
//	guard config [flags]   write the apiserver's webhook kubeconfigs and
//	                       AuthorizationConfiguration (apiserverconfig.Options)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/clusterconnect/clusterconnect/guard"
	"github.com/clusterconnect/clusterconnect/guard/apiserverconfig"
	"github.com/clusterconnect/clusterconnect/pkg/command"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "config" {
		os.Exit(config(os.Args[2:]))
	}
	o := guard.NewOptions()
	os.Exit(command.Main("guard", os.Args[1:], o, func(ctx context.Context, log *slog.Logger) error {
		return guard.Run(ctx, o, log, nil)
	}))
}

func config(args []string) int {
	o := apiserverconfig.NewOptions()
	fs := flag.NewFlagSet("guard config", flag.ExitOnError)
	o.Flags(fs)
	fs.Parse(args)
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "guard config: %v\n", err)
		return 2
	}
	f, err := o.Write()
	if err != nil {
		fmt.Fprintf(os.Stderr, "guard config: %v\n", err)
		return 1
	}
	for _, p := range []string{f.AuthnKubeconfig, f.AuthzKubeconfig, f.AuthorizationConfig} {
		if p != "" {
			fmt.Println("wrote", p)
		}
	}
	fmt.Println("kube-apiserver flags (and no --authorization-mode):")
	fmt.Println("  " + strings.Join(f.APIServerFlags, " \\\n  "))
	if f.WebhookClientCAFile != "" {
		// Space-separated: scripts pick the apiserver's flags out as
		// --name=value.
		fmt.Println("guard flag (the CA of the apiserver's client certificate, embedded in the kubeconfigs):")
		fmt.Println("  --webhook-client-ca-file " + f.WebhookClientCAFile)
		if f.ClientCertRenewed {
			fmt.Println("(a new client certificate and CA were made: start or restart guard with this CA file)")
		}
	}
	return 0
}
