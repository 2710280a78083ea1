package connectctl

import (
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func loginCmd(g *globals) *cobra.Command {
	var tokenFile, token string
	var entra bool
	var ec EntraConfig
	c := &cobra.Command{
		Use:   "login --relay URL [--ca-file F] (--token-file F | --token T | --entra --issuer-url … --client-id … --scope …)",
		Short: "Sign in to the relay (a token, or Entra ID) and save the settings in the config file",
		Long: `Saves the relay URL, its CA and how to sign in to its management API in the
config file, checks the sign-in with whoami, and prints who you are.

With --token-file or --token, management calls send that token: the relay's
admin token (<data-dir>/admin-token) or an API token (connectctl tokens create).

With --entra, connectctl signs in to Entra ID (or any OIDC issuer with a device
authorization endpoint) with the device code now — the instructions go to
standard error — and saves only the issuer settings. Every later call takes its
access token from the token cache and refreshes it as needed; connectctl
kubeconfig NAME --entra reuses the same settings for kubectl.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.relay == "" {
				return errors.New("--relay is required, e.g. --relay https://localhost:8443")
			}
			if token == "" {
				token = g.token
			}
			ca, err := absPath(g.caFile)
			if err != nil {
				return err
			}
			cfg := &Config{Relay: g.relay, CAFile: ca}
			switch {
			case entra && (token != "" || tokenFile != ""):
				return errors.New("--entra signs in with Entra ID: leave out --token, --relay-token and --token-file")
			case entra:
				if err := ec.validate("login --entra"); err != nil {
					return err
				}
				e := ec
				if e.IssuerCAFile, err = absPath(e.IssuerCAFile); err != nil {
					return err
				}
				if e.CacheDir, err = absPath(e.CacheDir); err != nil {
					return err
				}
				cfg.Entra = &e
			case token == "" && tokenFile == "":
				return errors.New("--token-file, --token or --entra is required (the relay writes its admin token to <data-dir>/admin-token; connectctl tokens create makes API tokens)")
			default:
				cfg.Token = token
				if cfg.TokenFile, err = absPath(tokenFile); err != nil {
					return err
				}
			}
			tok, err := cfg.token()
			if err != nil {
				return err
			}
			l := &relayLogin{relay: cfg.Relay, caFile: cfg.CAFile, token: tok}
			if cfg.Entra != nil {
				l.entra = newEntraSource(*cfg.Entra, cmd.ErrOrStderr(), g.now)
				if _, err := l.entra.SignIn(cmd.Context()); err != nil {
					return err
				}
			}
			cl, err := l.client()
			if err != nil {
				return err
			}
			who, err := cl.WhoAmI(cmd.Context())
			if err != nil {
				return fmt.Errorf("login check failed: %w", err)
			}
			if err := cfg.Save(g.configPath); err != nil {
				return err
			}
			// A client certificate cached for this login may belong to whoever
			// signed in before.
			os.Remove(clientCertCachePath(defaultClientCertDir(), l))
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Logged in to %s as %s.\n", cfg.Relay, describePrincipal(who.Principal))
			fmt.Fprintf(out, "Management roles: %s\n", rolesOrNone(who.Roles))
			fmt.Fprintf(out, "Settings saved in %s\n", g.configPath)
			return nil
		},
	}
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the relay token (admin or API token); read at every call")
	c.Flags().StringVar(&token, "token", "", "the relay token itself (saved in the config file); same as --relay-token")
	c.Flags().BoolVar(&entra, "entra", false, "sign in with Entra ID (device code) instead of a token")
	ec.addFlags(c, false)
	return c
}

// describePrincipal says who p is in a sentence.
func describePrincipal(p api.Principal) string {
	switch p.Kind {
	case api.PrincipalKindAdmin:
		return "the relay admin (admin token)"
	case api.PrincipalKindToken:
		return fmt.Sprintf("API token %q (ID %s)", p.Name, p.ID)
	case api.PrincipalKindUser:
		name := p.Name
		if name == "" {
			name = p.ID
		}
		return fmt.Sprintf("user %s (object ID %s, %d groups)", name, p.ID, len(p.Groups))
	default:
		return fmt.Sprintf("%s %s", p.Kind, p.ID)
	}
}

func rolesOrNone(roles []string) string {
	if len(roles) == 0 {
		return "none"
	}
	return strings.Join(roles, ", ")
}

func whoamiCmd(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the relay takes you for, and your management roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			who, err := cl.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			switch output {
			case "table", "":
				printWhoAmI(cmd.OutOrStdout(), who)
				return nil
			default:
				return printData(cmd.OutOrStdout(), output, who)
			}
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return c
}

func printWhoAmI(w io.Writer, who *api.WhoAmI) {
	p := who.Principal
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"Kind", p.Kind},
		{"ID", p.ID},
		{"Name", orDash(p.Name)},
		{"Groups", fmt.Sprint(len(p.Groups))},
		{"Via", orDash(p.Via)},
		{"Management roles", rolesOrNone(who.Roles)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
}
