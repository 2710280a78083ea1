package connectctl

import (
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// tokensCmd manages API tokens: long-lived (up to the relay's maximum)
// bearer tokens with a management role, for scripts and CI.
func tokensCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "tokens",
		Short: "API tokens for the management API (create, list, revoke)",
		Long: `API tokens sign scripts and CI in to the relay's management API with a management
role (Reader, Contributor or Owner; at most your own). The relay keeps only a hash:
the token is shown once, when it is created.`,
	}
	var name, role, file string
	var expires time.Duration
	create := &cobra.Command{
		Use:   "create --name N --role Reader|Contributor|Owner [--expires 24h]",
		Short: "Create an API token and print it (once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || role == "" {
				return errors.New("--name and --role are required")
			}
			if expires < 0 {
				return errors.New("--expires must not be negative")
			}
			l, _, err := g.login(cmd)
			if err != nil {
				return err
			}
			cl, err := l.client()
			if err != nil {
				return err
			}
			t, err := cl.CreateToken(cmd.Context(), name, role, expires)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "API token %q created: ID %s, role %s, expires %s.\n", t.Name, t.ID, t.Role, stamp(t.ExpiresAt, g.now()))
			tokenArg := "<file holding the token>"
			if file != "" {
				if err := os.WriteFile(file, []byte(t.Token+"\n"), 0o600); err != nil {
					return fmt.Errorf("writing the token failed (revoke it with `connectctl tokens revoke %s` and create another): %w", t.ID, err)
				}
				fmt.Fprintf(out, "The token is written to %s; it is not shown again.\n", file)
				tokenArg = file
			} else {
				fmt.Fprintf(out, "Token (shown only now): %s\n", t.Token)
			}
			caArg := ""
			if l.caFile != "" {
				caArg = " --ca-file " + l.caFile
			}
			fmt.Fprintf(out, "Use it: connectctl login --relay %s%s --token-file %s\n", cl.base, caArg, tokenArg)
			fmt.Fprintf(out, "    or: export CONNECTCTL_RELAY=%s CONNECTCTL_RELAY_TOKEN=<token>\n", cl.base)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&name, "name", "", "what the token is for, e.g. ci-deploy (required)")
	f.StringVar(&role, "role", "", "management role: Reader, Contributor or Owner, at most your own (required)")
	f.DurationVar(&expires, "expires", 0, "lifetime, e.g. 24h or 720h (default: the relay's, 24h; at most 90 days)")
	f.StringVar(&file, "token-file", "", "write the token to this file (mode 0600) instead of printing it")

	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List API tokens (not their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			ts, err := cl.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			switch output {
			case "table", "":
				return printTokens(cmd.OutOrStdout(), ts, g.now())
			default:
				return printData(cmd.OutOrStdout(), output, api.TokenList{Value: ts})
			}
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token: it stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := cl.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "API token %s revoked.\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, list, revoke)
	return c
}

func printTokens(w io.Writer, ts []api.APIToken, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tEXPIRES\tCREATED BY")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, expiry(t.ExpiresAt, now), orDash(t.CreatedBy))
	}
	return tw.Flush()
}

// expiry is when something ends: "never" for the zero time, else stamp's
// form, "expired" once past.
func expiry(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "never"
	case !t.After(now):
		return t.UTC().Format(time.RFC3339) + " (expired " + ago(t, now) + " ago)"
	default:
		return stamp(t, now)
	}
}
