// Package connectctl is the command-line client of the relay: register
// clusters, see whether they are connected, and get kubeconfigs for them.
package connectctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// globals are the flags every command takes; each overrides the config file
// and the environment (CONNECTCTL_RELAY, CONNECTCTL_RELAY_TOKEN, CONNECTCTL_CA_FILE).
type globals struct {
	now        func() time.Time
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
func NewCommand(out io.Writer) *cobra.Command { return newCommand(out, time.Now) }

func newCommand(out io.Writer, now func() time.Time) *cobra.Command {
	g := &globals{now: now}
	root := &cobra.Command{
		Use:   "connectctl",
		Short: "Manage clusters connected to a clusterconnect relay",
		Long: `connectctl manages clusters connected to a clusterconnect relay, the way az connectedk8s does
for Azure Arc: connect (register) a cluster, list and show them with their connectivity status,
get a kubeconfig that reaches a cluster through the relay, delete a cluster.

Settings come from the config file (written by login), overridden by the environment
(CONNECTCTL_RELAY, CONNECTCTL_RELAY_TOKEN, CONNECTCTL_CA_FILE) and then by flags.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", DefaultConfigPath(), "connectctl config file ($CONNECTCTL_CONFIG)")
	pf.StringVar(&g.relay, "relay", "", "relay URL ($CONNECTCTL_RELAY)")
	pf.StringVar(&g.token, "relay-token", "", "relay admin token ($CONNECTCTL_RELAY_TOKEN)")
	pf.StringVar(&g.caFile, "ca-file", "", "CA bundle to trust for the relay ($CONNECTCTL_CA_FILE)")

	// The verbs of az connectedk8s, and the same under "clusters" with
	// create/token for scripts.
	root.AddCommand(loginCmd(g), connectCmd(g, "connect"), listCmd(g), showCmd(g), deleteCmd(g), updateCmd(g), tokenCmd(g), kubeconfigCmd(g))
	clusters := &cobra.Command{Use: "clusters", Aliases: []string{"cluster"}, Short: "Cluster verbs grouped: create, token, list, show, update, delete"}
	clusters.AddCommand(connectCmd(g, "create"), tokenCmd(g), listCmd(g), showCmd(g), updateCmd(g), deleteCmd(g))
	root.AddCommand(clusters, roleCmd(g))
	root.AddCommand(getTokenCmd()) // kubectl exec credential plugin for kube-aad-proxy (tokenexec.go)
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
			tok, err := cfg.token()
			if err != nil {
				return err
			}
			cl, err := NewClient(g.relay, tok, g.caFile)
			if err != nil {
				return err
			}
			if _, err := cl.ListClusters(cmd.Context(), "", nil); err != nil {
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

func parseTags(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	tags := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("tag %q: want key=value", kv)
		}
		tags[k] = v
	}
	return tags, nil
}

type tokenFlags struct {
	file string
	ttl  time.Duration
}

func (f *tokenFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.file, "token-file", "", "write the registration token to this file (mode 0600) instead of printing it")
	c.Flags().DurationVar(&f.ttl, "token-ttl", 0, "how long the token can be used (default: the relay's, 1h)")
}

func (f *tokenFlags) print(cmd *cobra.Command, cl *Client, v *api.ConnectedCluster, what string) error {
	out := cmd.OutOrStdout()
	expires := v.RegistrationTokenExpiresAt.UTC().Format(time.RFC3339)
	tokenArg := "<file holding the token>"
	if f.file != "" {
		if err := os.WriteFile(f.file, []byte(v.RegistrationToken+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing the token failed (issue another with `connectctl token %s`): %w", v.Name, err)
		}
		fmt.Fprintf(out, "Cluster %q %s. Registration token (one use, until %s) written to %s.\n", v.Name, what, expires, f.file)
		tokenArg = f.file
	} else {
		fmt.Fprintf(out, "Cluster %q %s.\nRegistration token (one use, until %s): %s\n", v.Name, what, expires, v.RegistrationToken)
	}
	fmt.Fprintf(out, "Install the agent in the cluster: give it the token and run\n  clusteragent --relay-url %s --cluster %s --registration-token-file %s\n", cl.base, v.Name, tokenArg)
	fmt.Fprintf(out, "(in a pod: put the token in a Secret mounted as a file; the agent keeps its identity in the Secret clusterconnect-identity of its namespace)\n")
	return nil
}

func connectCmd(g *globals, use string) *cobra.Command {
	var tf tokenFlags
	var tags []string
	c := &cobra.Command{
		Use:   use + " NAME",
		Short: "Register (connect) a cluster and print the agent install command with its one-time registration token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			tm, err := parseTags(tags)
			if err != nil {
				return err
			}
			v, err := cl.CreateCluster(cmd.Context(), args[0], tm, tf.ttl)
			if err != nil {
				return err
			}
			return tf.print(cmd, cl, v, "registered")
		},
	}
	tf.add(c)
	c.Flags().StringSliceVar(&tags, "tags", nil, "tags, key=value (repeatable or comma-separated)")
	return c
}

func tokenCmd(g *globals) *cobra.Command {
	var tf tokenFlags
	c := &cobra.Command{
		Use:   "token NAME",
		Short: "Issue a new one-time registration token (to re-register a cluster); earlier tokens stop working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			v, err := cl.NewRegistrationToken(cmd.Context(), args[0], tf.ttl)
			if err != nil {
				return err
			}
			return tf.print(cmd, cl, v, "has a new registration token")
		},
	}
	tf.add(c)
	return c
}

func listCmd(g *globals) *cobra.Command {
	var status, output string
	var tags []string
	c := &cobra.Command{
		Use:   "list",
		Short: "List clusters: status, Kubernetes version, nodes, agent version, last seen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			items, err := cl.ListClusters(cmd.Context(), status, tags)
			if err != nil {
				return err
			}
			switch output {
			case "table", "":
				printTable(cmd.OutOrStdout(), items, g.now())
				return nil
			default:
				return printData(cmd.OutOrStdout(), output, api.ClusterList{Value: items})
			}
		},
	}
	c.Flags().StringVar(&status, "status", "", "only clusters with this status: Connecting, Connected, Offline, Expired")
	c.Flags().StringSliceVar(&tags, "tag", nil, "only clusters with this tag, key=value (repeatable)")
	c.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return c
}

func showCmd(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one cluster with its latest status changes",
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
			switch output {
			case "table", "":
				printShow(cmd.OutOrStdout(), v, g.now())
				return nil
			default:
				return printData(cmd.OutOrStdout(), output, v)
			}
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return c
}

func updateCmd(g *globals) *cobra.Command {
	var tags []string
	var ifMatch string
	c := &cobra.Command{
		Use:   "update NAME --tags k=v[,k=v]",
		Short: "Replace a cluster's tags",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			tm, err := parseTags(tags)
			if err != nil {
				return err
			}
			if tm == nil {
				tm = map[string]string{}
			}
			v, err := cl.UpdateTags(cmd.Context(), args[0], tm, ifMatch)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Cluster %q updated (etag %s).\n", v.Name, v.Etag)
			return nil
		},
	}
	c.Flags().StringSliceVar(&tags, "tags", nil, "the new tags, key=value (none: remove all)")
	c.Flags().StringVar(&ifMatch, "if-match", "", "only update if the cluster's etag is still this")
	return c
}

func deleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a cluster: its certificates are revoked and its tunnels close at once",
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
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago says how long before now t was, kubectl style ("5m", "3d"), or "-".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < 0:
		return "0s"
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

func printTable(w io.Writer, items []api.ConnectedCluster, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tK8S VERSION\tNODES\tAGENT VERSION\tLAST SEEN")
	for _, v := range items {
		p := v.Properties
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, p.ConnectivityStatus, orDash(p.KubernetesVersion), p.TotalNodeCount, orDash(p.AgentVersion), ago(p.LastConnectivityTime, now))
	}
	tw.Flush()
}

// showEvents is how many status changes `show` prints.
const showEvents = 5

func printShow(w io.Writer, v *api.ConnectedCluster, now time.Time) {
	p := v.Properties
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ts := func(t time.Time) string {
		switch {
		case t.IsZero():
			return "-"
		case t.After(now):
			return t.UTC().Format(time.RFC3339) + " (in " + ago(now, t) + ")"
		default:
			return t.UTC().Format(time.RFC3339) + " (" + ago(t, now) + " ago)"
		}
	}
	var tags []string
	for k, val := range v.Tags {
		tags = append(tags, k+"="+val)
	}
	slices.Sort(tags)
	for _, kv := range [][2]string{
		{"Name", v.Name},
		{"Status", p.ConnectivityStatus},
		{"Location", v.Location},
		{"Kubernetes version", orDash(p.KubernetesVersion)},
		{"Agent version", orDash(p.AgentVersion)},
		{"Nodes", fmt.Sprint(p.TotalNodeCount)},
		{"Cores", fmt.Sprint(p.TotalCoreCount)},
		{"Distribution", orDash(p.Distribution)},
		{"Infrastructure", orDash(p.Infrastructure)},
		{"Tunnels", fmt.Sprint(p.Tunnels)},
		{"Last seen", ts(p.LastConnectivityTime)},
		{"Certificate expires", ts(p.ManagedIdentityCertificateExpirationTime)},
		{"Created", ts(v.SystemData.CreatedAt)},
		{"Tags", orDash(strings.Join(tags, ","))},
		{"ID", v.ID},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
	events := p.Events
	if len(events) > showEvents {
		events = events[len(events)-showEvents:]
	}
	if len(events) > 0 {
		fmt.Fprintln(w, "Events:")
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "  TIME\tFROM\tTO\tREASON")
		for _, e := range events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.From, e.To, e.Reason)
		}
		tw.Flush()
	}
}

func printData(w io.Writer, format string, v any) error {
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
	default:
		return fmt.Errorf("-o %q: want table, json or yaml", format)
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
