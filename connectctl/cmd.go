// Package connectctl is the command-line client of the relay: register
// clusters, see whether they are connected, and get kubeconfigs for them.
package connectctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/clusterconnect/clusterconnect/relay"
)

// globals are the flags every command takes; each overrides the config file
// and the environment (CONNECTCTL_RELAY, CONNECTCTL_RELAY_TOKEN, CONNECTCTL_CA_FILE).
type globals struct {
	configPath string
	relay      string
	token      string
	caFile     string
}

func (g *globals) client() (*Client, error) {
	cfg, err := LoadConfig(g.configPath)
	if err != nil {
		return nil, err
	}
	pick := func(flag, env, file string) string {
		if flag != "" {
			return flag
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return file
	}
	tok, err := cfg.token()
	if err != nil {
		return nil, err
	}
	base := pick(g.relay, "CONNECTCTL_RELAY", cfg.Relay)
	token := pick(g.token, "CONNECTCTL_RELAY_TOKEN", tok)
	ca := pick(g.caFile, "CONNECTCTL_CA_FILE", cfg.CAFile)
	if base == "" {
		return nil, errors.New("no relay configured: run `connectctl login --relay https://<relay> --token-file <admin-token>` or pass --relay")
	}
	if token == "" {
		return nil, errors.New("no relay admin token: run `connectctl login` or set CONNECTCTL_RELAY_TOKEN")
	}
	return NewClient(base, token, ca)
}

// NewCommand returns the connectctl root command writing to out.
func NewCommand(out io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "connectctl",
		Short:         "Manage clusters connected to a clusterconnect relay",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", DefaultConfigPath(), "connectctl config file ($CONNECTCTL_CONFIG)")
	pf.StringVar(&g.relay, "relay", "", "relay URL ($CONNECTCTL_RELAY)")
	pf.StringVar(&g.token, "relay-token", "", "relay admin token ($CONNECTCTL_RELAY_TOKEN)")
	pf.StringVar(&g.caFile, "ca-file", "", "CA bundle to trust for the relay ($CONNECTCTL_CA_FILE)")

	root.AddCommand(loginCmd(g), clustersCmd(g), kubeconfigCmd(g))
	return root
}

func loginCmd(g *globals) *cobra.Command {
	var tokenFile string
	c := &cobra.Command{
		Use:   "login",
		Short: "Save the relay URL, its CA and the admin token in the config file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.relay == "" {
				return errors.New("--relay is required, e.g. --relay https://localhost:8443")
			}
			if g.token == "" && tokenFile == "" {
				return errors.New("--relay-token or --token-file is required (the relay writes its admin token to <data-dir>/admin-token)")
			}
			cfg := &Config{Relay: g.relay, CAFile: g.caFile, Token: g.token, TokenFile: tokenFile}
			cl, err := (&globals{configPath: os.DevNull, relay: g.relay, token: mustToken(cfg), caFile: g.caFile}).client()
			if err != nil {
				return err
			}
			if _, err := cl.ListClusters(cmd.Context()); err != nil {
				return fmt.Errorf("login check failed: %w", err)
			}
			if err := cfg.Save(g.configPath); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s; settings saved in %s\n", g.relay, g.configPath)
			return nil
		},
	}
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the relay admin token")
	return c
}

func mustToken(c *Config) string {
	t, _ := c.token()
	return t
}

func clustersCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "clusters", Aliases: []string{"cluster"}, Short: "Register, list, show and delete clusters"}
	var tokenFile string
	var ttl time.Duration
	printToken := func(cmd *cobra.Command, cl *Client, v *relay.ClusterView, what string) error {
		out := cmd.OutOrStdout()
		expires := v.RegistrationTokenExpiresAt.Local().Format(time.RFC3339)
		if tokenFile != "" {
			if err := os.WriteFile(tokenFile, []byte(v.RegistrationToken+"\n"), 0o600); err != nil {
				return fmt.Errorf("writing the token failed (issue another with `connectctl clusters token %s`): %w", v.Name, err)
			}
			fmt.Fprintf(out, "Cluster %q %s. Registration token (one use, until %s) written to %s.\n", v.Name, what, expires, tokenFile)
		} else {
			fmt.Fprintf(out, "Cluster %q %s.\nRegistration token (one use, until %s): %s\n", v.Name, what, expires, v.RegistrationToken)
		}
		fmt.Fprintf(out, "Run the agent in the cluster with:\n  clusteragent --relay-url %s --cluster %s --registration-token-file <file holding the token>\n", cl.base, v.Name)
		return nil
	}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Register a cluster and print its one-time registration token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			v, err := cl.CreateCluster(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			return printToken(cmd, cl, v, "registered")
		},
	}
	token := &cobra.Command{
		Use:   "token NAME",
		Short: "Issue a new one-time registration token (to re-register a cluster); earlier tokens stop working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			v, err := cl.NewRegistrationToken(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			return printToken(cmd, cl, v, "has a new registration token")
		},
	}
	for _, c := range []*cobra.Command{create, token} {
		c.Flags().StringVar(&tokenFile, "token-file", "", "write the registration token to this file (mode 0600) instead of printing it")
		c.Flags().DurationVar(&ttl, "token-ttl", 0, "how long the token can be used (default: the relay's, 1h)")
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List clusters and whether they are connected",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			items, err := cl.ListClusters(cmd.Context())
			if err != nil {
				return err
			}
			printTable(cmd.OutOrStdout(), items)
			return nil
		},
	}
	var output string
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			v, err := cl.GetCluster(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printOne(cmd.OutOrStdout(), output, v)
		},
	}
	show.Flags().StringVarP(&output, "output", "o", "table", "json, yaml or table")
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a cluster; its tunnels close at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			if err := cl.DeleteCluster(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Cluster %q deleted.\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, token, list, show, del)
	return c
}

func printTable(w io.Writer, items []relay.ClusterView) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tTUNNELS\tCERT EXPIRES\tAGE")
	for _, v := range items {
		exp := "-"
		if !v.CertificateExpiresAt.IsZero() {
			exp = v.CertificateExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.Name, v.Status, v.Tunnels, exp, age(v.CreatedAt))
	}
	tw.Flush()
}

func age(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func printOne(w io.Writer, format string, v *relay.ClusterView) error {
	switch format {
	case "json":
		b, _ := json.MarshalIndent(v, "", "  ")
		_, err := fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "":
		printTable(w, []relay.ClusterView{*v})
		return nil
	default:
		return fmt.Errorf("-o %q: want json, yaml or table", format)
	}
}

func kubeconfigCmd(g *globals) *cobra.Command {
	var token, tokenFile, file string
	c := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Get the relay-issued kubeconfig of a cluster and merge it into your kubeconfig",
		Long: `Fetches the kubeconfig the relay issues for a cluster (the relay URL for it and
the relay's CA) and adds your credential: a bearer token the cluster's API server
accepts, e.g. a service-account token. By default the context is merged into the
kubeconfig kubectl uses (KUBECONFIG, else ~/.kube/config) and made current; other
contexts are kept. With --file, a standalone kubeconfig is written instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				token = strings.TrimSpace(string(b))
			}
			raw, err := cl.Kubeconfig(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			issued, err := clientcmd.Load(raw)
			if err != nil {
				return fmt.Errorf("relay sent a kubeconfig that does not parse: %w", err)
			}
			for _, ai := range issued.AuthInfos {
				ai.Token = token
			}
			out := cmd.OutOrStdout()
			if file != "" {
				if err := clientcmd.WriteToFile(*issued, file); err != nil {
					return err
				}
				fmt.Fprintf(out, "Wrote kubeconfig for cluster %q to %s\n", args[0], file)
				return nil
			}
			po := clientcmd.NewDefaultPathOptions()
			cur, err := po.GetStartingConfig()
			if err != nil {
				return err
			}
			merge(cur, issued)
			if err := clientcmd.ModifyConfig(po, *cur, true); err != nil {
				return err
			}
			fmt.Fprintf(out, "Merged context %q into %s and made it current\n", issued.CurrentContext, po.GetDefaultFilename())
			return nil
		},
	}
	c.Flags().StringVar(&token, "token", "", "bearer token for the cluster's API server (travels through the relay)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding that token")
	c.Flags().StringVarP(&file, "file", "f", "", "write a standalone kubeconfig here instead of merging")
	return c
}

// merge adds (or replaces) src's clusters, users and contexts in dst and makes
// src's context current; dst's other entries stay.
func merge(dst, src *clientcmdapi.Config) {
	for k, v := range src.Clusters {
		dst.Clusters[k] = v
	}
	for k, v := range src.AuthInfos {
		dst.AuthInfos[k] = v
	}
	for k, v := range src.Contexts {
		dst.Contexts[k] = v
	}
	dst.CurrentContext = src.CurrentContext
}
