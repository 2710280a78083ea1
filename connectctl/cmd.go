// Package connectctl is the command-line client of the relay: register
// clusters, see whether they are connected, and get kubeconfigs for them;
// manage the front door's role assignments, API tokens and audit log; and
// serve kubectl as an exec credential plugin (get-token for Entra mode,
// kube-credential for token mode's relay client certificate).
package connectctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
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

// relayLogin is how connectctl reaches the relay and signs in to it: with a
// token (the admin token or an API token) or with an Entra login.
type relayLogin struct {
	relay, caFile string
	token         string
	// entra is the Entra login's token source; nil with a token.
	entra *entraSource
}

// login resolves the relay login from the flags, the environment and the
// config file, in that order; a token from a flag or the environment wins
// over the config's Entra login. Device-code instructions go to cmd's
// standard error.
func (g *globals) login(cmd *cobra.Command) (*relayLogin, *Config, error) {
	cfg, err := LoadConfig(g.configPath)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, err
	}
	l := &relayLogin{
		relay:  pick(g.relay, "CONNECTCTL_RELAY", cfg.Relay),
		caFile: pick(g.caFile, "CONNECTCTL_CA_FILE", cfg.CAFile),
		token:  pick(g.token, "CONNECTCTL_RELAY_TOKEN", tok),
	}
	if l.relay == "" {
		return nil, nil, errors.New("no relay configured: run `connectctl login --relay https://<relay> --token-file <token file>` (or --entra …) or pass --relay")
	}
	if l.token == "" && cfg.Entra != nil {
		l.entra = newEntraSource(*cfg.Entra, cmd.ErrOrStderr(), g.now)
	}
	if l.token == "" && l.entra == nil {
		return nil, nil, errors.New("no relay login: run `connectctl login` (--token-file with the admin token or an API token, or --entra for an Entra sign-in) or set CONNECTCTL_RELAY_TOKEN")
	}
	return l, cfg, nil
}

// client returns a management API client that signs in as l.
func (l *relayLogin) client() (*Client, error) {
	if l.entra == nil {
		return NewClient(l.relay, l.token, l.caFile)
	}
	return newClient(l.relay, l.caFile, func(ctx context.Context) (string, error) {
		t, err := l.entra.Token(ctx)
		if err != nil {
			return "", err
		}
		return t.AccessToken, nil
	})
}

// identity names who l signs in as without revealing a secret: a hash of
// the token, or the Entra issuer, client and scopes.
func (l *relayLogin) identity() string {
	if l.entra != nil {
		return "entra\n" + l.entra.cfg.IssuerURL + "\n" + l.entra.cfg.ClientID + "\n" + strings.Join(l.entra.cfg.Scopes, " ")
	}
	h := sha256.Sum256([]byte(l.token))
	return "token\n" + hex.EncodeToString(h[:])
}

func (g *globals) client(cmd *cobra.Command) (*Client, error) {
	l, _, err := g.login(cmd)
	if err != nil {
		return nil, err
	}
	return l.client()
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
get a kubeconfig that reaches a cluster through the relay, delete a cluster; and the relay's
front door: role assignments (cluster and management roles, optionally time-bound), API tokens,
the audit log, and who you are signed in as.

Sign in with login: a token (the relay's admin token or an API token from tokens create) or an
Entra ID sign-in (login --entra, device code). Settings come from the config file (written by
login), overridden by the environment (CONNECTCTL_RELAY, CONNECTCTL_RELAY_TOKEN,
CONNECTCTL_CA_FILE) and then by flags.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", DefaultConfigPath(), "connectctl config file ($CONNECTCTL_CONFIG)")
	pf.StringVar(&g.relay, "relay", "", "relay URL ($CONNECTCTL_RELAY)")
	pf.StringVar(&g.token, "relay-token", "", "relay token: the admin token or an API token ($CONNECTCTL_RELAY_TOKEN)")
	pf.StringVar(&g.caFile, "ca-file", "", "CA bundle to trust for the relay ($CONNECTCTL_CA_FILE)")

	// The verbs of az connectedk8s, and the same under "clusters" with
	// create/token for scripts.
	root.AddCommand(loginCmd(g), connectCmd(g, "connect"), upgradeCmd(g), disconnectCmd(g), listCmd(g), showCmd(g), deleteCmd(g), updateCmd(g), tokenCmd(g), kubeconfigCmd(g))
	clusters := &cobra.Command{Use: "clusters", Aliases: []string{"cluster"}, Short: "Cluster verbs grouped: create, token, list, show, update, delete"}
	clusters.AddCommand(connectCmd(g, "create"), tokenCmd(g), listCmd(g), showCmd(g), updateCmd(g), deleteCmd(g))
	root.AddCommand(clusters, roleCmd(g), tokensCmd(g), auditCmd(g), whoamiCmd(g))
	root.AddCommand(getTokenCmd(g))       // kubectl exec credential plugin for kube-aad-proxy (tokenexec.go)
	root.AddCommand(kubeCredentialCmd(g)) // kubectl exec credential plugin for token mode (kubecred.go)
	return root
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
	var f installFlags
	var guard bool
	var proxyURL, proxyCA, noProxy string
	short := "Register a cluster and print the agent install command with its one-time registration token"
	if use == "connect" {
		short = "Connect a cluster: register it and install its agents with the embedded Helm chart (--kubeconfig); a second run upgrades"
	}
	c := &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tm, err := parseTags(tags)
			if err != nil {
				return err
			}
			if f.target.Kubeconfig != "" {
				if tf.file != "" {
					return errors.New("--token-file goes without --kubeconfig: with it, the token goes straight into the cluster's registration Secret")
				}
				return installAgents(cmd, g, args[0], &f, guard, proxyURL, proxyCA, noProxy, tm, tf.ttl)
			}
			cl, err := g.client(cmd)
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
	if use == "connect" {
		f.addTarget(c)
		f.addChart(c)
		c.Flags().BoolVar(&guard, "enable-guard", false, "also run guard, the apiserver's authorization webhook deciding from the relay's role assignments")
		c.Flags().StringVar(&proxyURL, "proxy-url", "", "HTTPS proxy the agents dial out through, e.g. http://proxy.corp:3128")
		c.Flags().StringVar(&proxyCA, "proxy-ca", "", "CA bundle (PEM file) of a TLS-inspecting proxy")
		c.Flags().StringVar(&noProxy, "proxy-skip-range", "", "NO_PROXY additions for the agents (comma-separated)")
	}
	return c
}

func tokenCmd(g *globals) *cobra.Command {
	var tf tokenFlags
	c := &cobra.Command{
		Use:   "token NAME",
		Short: "Issue a new one-time registration token (to re-register a cluster); earlier tokens stop working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client(cmd)
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
			cl, err := g.client(cmd)
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
			cl, err := g.client(cmd)
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
			cl, err := g.client(cmd)
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
			cl, err := g.client(cmd)
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

// stamp is t in RFC 3339 (UTC) with how long from now: "… (in 8h)",
// "… (5m ago)"; "-" for the zero time.
func stamp(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "-"
	case t.After(now):
		return t.UTC().Format(time.RFC3339) + " (in " + ago(now, t) + ")"
	default:
		return t.UTC().Format(time.RFC3339) + " (" + ago(t, now) + " ago)"
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
	ts := func(t time.Time) string { return stamp(t, now) }
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
		{"Tunnels", tunnelsText(p)},
		{"Last seen", ts(p.LastConnectivityTime)},
		{"Certificate expires", ts(p.ManagedIdentityCertificateExpirationTime)},
		{"Created", ts(v.SystemData.CreatedAt)},
		{"Tags", orDash(strings.Join(tags, ","))},
		{"ID", v.ID},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
	if len(p.Agents) > 0 {
		fmt.Fprintln(w, "Agents:")
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "  ROLE\tVERSION\tREADY\tLAST ERROR")
		for _, a := range p.Agents {
			fmt.Fprintf(tw, "  %s\t%s\t%d/%d\t%s\n", a.Role, orDash(a.Version), a.ReadyReplicas, a.Replicas, orDash(oneLine(a.LastError)))
		}
		tw.Flush()
	}
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
	var entra bool
	var scopes []string
	c := &cobra.Command{
		Use:   "kubeconfig NAME (--token T | --token-file F | --entra)",
		Short: "Get the relay-issued kubeconfig of a cluster, with your credential as an exec plugin, and merge it into your kubeconfig",
		Long: `Fetches the kubeconfig the relay issues for a cluster (the relay URL for it, the
relay's CA and TLS server name, kept as the relay sends them) and adds your
credential as a kubectl exec plugin, so that nothing long-lived but the
Kubernetes token is written:

  --token or --token-file: token mode. A bearer token the cluster's API server
  accepts (e.g. a service-account token) goes into the user's exec environment
  as CONNECTCTL_KUBE_TOKEN, and kubectl runs

    connectctl kube-credential --config <this config file> --cluster NAME

  which hands kubectl that token and a short-lived relay client certificate
  issued to your relay login (connectctl login), cached until 5 minutes before
  it expires. The relay admits you by the certificate and passes the token on.

  --entra: Entra mode. kubectl runs connectctl get-token with the issuer, client
  ID, scope and issuer CA saved by connectctl login --entra (--scope asks for
  another scope, e.g. kube-aad-proxy's server application); the relay and
  kube-aad-proxy verify the Entra access token.

By default the context is merged into the kubeconfig kubectl uses (KUBECONFIG,
else ~/.kube/config) and made current; other contexts are kept. With --file, a
standalone kubeconfig is written instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			l, cfg, err := g.login(cmd)
			if err != nil {
				return err
			}
			cl, err := l.client()
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
			if len(scopes) > 0 && !entra {
				return errors.New("--scope goes with --entra")
			}
			if !entra && token == "" {
				return errors.New("no Kubernetes token: --token or --token-file is empty")
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("cannot find connectctl's own path for the exec plugin: %w", err)
			}
			if exe, err = filepath.Abs(exe); err != nil {
				return err
			}
			var user *clientcmdapi.AuthInfo
			if entra {
				if cfg.Entra == nil {
					return fmt.Errorf("no Entra settings in %s: run `connectctl login --entra --issuer-url … --client-id … --scope …` first", g.configPath)
				}
				e := *cfg.Entra
				if len(scopes) > 0 {
					e.Scopes = scopes
				}
				user = entraExecUser(exe, &e)
			} else {
				confPath, err := filepath.Abs(g.configPath)
				if err != nil {
					return err
				}
				if cfg.Relay == "" || (cfg.Token == "" && cfg.TokenFile == "" && cfg.Entra == nil) {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: kubectl's connectctl kube-credential reads the relay login from %s, which has none: run `connectctl --config %s login …` (or export CONNECTCTL_RELAY and CONNECTCTL_RELAY_TOKEN for kubectl)\n", confPath, confPath)
				}
				user = tokenExecUser(exe, confPath, name, token)
			}
			raw, err := cl.Kubeconfig(cmd.Context(), name)
			if err != nil {
				return err
			}
			issued, err := clientcmd.Load(raw)
			if err != nil {
				return fmt.Errorf("relay sent a kubeconfig that does not parse: %w", err)
			}
			for k := range issued.AuthInfos {
				issued.AuthInfos[k] = user.DeepCopy()
			}
			out := cmd.OutOrStdout()
			if file != "" {
				if err := clientcmd.WriteToFile(*issued, file); err != nil {
					return err
				}
				fmt.Fprintf(out, "Wrote kubeconfig for cluster %q to %s\n", name, file)
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
	c.Flags().StringVar(&token, "token", "", "token mode: bearer token for the cluster's API server, e.g. a service-account token (travels through the relay)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "token mode: file holding that token")
	c.Flags().BoolVar(&entra, "entra", false, "Entra mode: kubectl gets an Entra token with connectctl get-token, as set up by login --entra")
	c.Flags().StringSliceVar(&scopes, "scope", nil, "with --entra: the scopes get-token asks for (default: those of login --entra)")
	c.Flags().StringVarP(&file, "file", "f", "", "write a standalone kubeconfig here instead of merging")
	c.MarkFlagsMutuallyExclusive("token", "token-file", "entra")
	c.MarkFlagsOneRequired("token", "token-file", "entra")
	return c
}

// kubeTokenEnv carries token mode's Kubernetes token from the kubeconfig's
// exec user to kube-credential.
const kubeTokenEnv = "CONNECTCTL_KUBE_TOKEN"

// tokenExecUser is token mode's kubeconfig user: kube-credential with the
// Kubernetes token in its environment.
func tokenExecUser(exe, configPath, cluster, token string) *clientcmdapi.AuthInfo {
	u := clientcmdapi.NewAuthInfo()
	u.Exec = &clientcmdapi.ExecConfig{
		APIVersion:      clientauthv1.SchemeGroupVersion.String(),
		Command:         exe,
		Args:            []string{"kube-credential", "--config", configPath, "--cluster", cluster},
		Env:             []clientcmdapi.ExecEnvVar{{Name: kubeTokenEnv, Value: token}},
		InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}
	return u
}

// entraExecUser is Entra mode's kubeconfig user: get-token with the Entra
// settings of login --entra.
func entraExecUser(exe string, e *EntraConfig) *clientcmdapi.AuthInfo {
	args := []string{"get-token", "--issuer-url", e.IssuerURL, "--client-id", e.ClientID}
	for _, sc := range e.Scopes {
		args = append(args, "--scope", sc)
	}
	if e.IssuerCAFile != "" {
		args = append(args, "--issuer-ca-file", e.IssuerCAFile)
	}
	if e.CacheDir != "" {
		args = append(args, "--cache-dir", e.CacheDir)
	}
	u := clientcmdapi.NewAuthInfo()
	u.Exec = &clientcmdapi.ExecConfig{
		APIVersion:      clientauthv1.SchemeGroupVersion.String(),
		Command:         exe,
		Args:            args,
		InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}
	return u
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

// oneLine folds a multi-line message (a pod's last log lines) onto one
// line for a table cell.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// tunnelsText is the tunnels on the replica that answered and, in a fleet,
// every replica's: "1 (fleet: relay-a 1, relay-b 1)".
func tunnelsText(p api.ClusterProperties) string {
	s := fmt.Sprint(p.Tunnels)
	if len(p.Replicas) == 0 {
		return s
	}
	parts := make([]string, 0, len(p.Replicas))
	for _, r := range p.Replicas {
		parts = append(parts, fmt.Sprintf("%s %d", r.Replica, r.Tunnels))
	}
	return s + " on this replica (fleet: " + strings.Join(parts, ", ") + ")"
}
