package connectctl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"

	"github.com/clusterconnect/clusterconnect/connectctl/install"
	"github.com/clusterconnect/clusterconnect/pkg/version"
)

// installFlags are the flags connect, upgrade and disconnect share: which
// cluster, which chart, which values.
type installFlags struct {
	target       install.Target
	values       install.Values
	chart        string
	chartVersion string
	timeout      time.Duration
}

func (f *installFlags) addTarget(c *cobra.Command) {
	c.Flags().StringVar(&f.target.Kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to install the agents into (required)")
	c.Flags().StringVar(&f.target.Context, "context", "", "kubeconfig context (default: its current context)")
	c.Flags().StringVarP(&f.target.Namespace, "namespace", "n", install.DefaultNamespace, "namespace of the agents")
	c.Flags().StringVar(&f.target.ReleaseName, "release-name", install.DefaultReleaseName, "Helm release name of the agent chart")
	c.Flags().DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long the whole operation may take")
}

func (f *installFlags) addChart(c *cobra.Command) {
	c.Flags().StringVar(&f.chart, "chart", "", "agent chart to install instead of the embedded one: a directory, a .tgz or an oci:// reference")
	c.Flags().StringVar(&f.chartVersion, "chart-version", "", "version of an oci:// --chart (default: the newest)")
	c.Flags().StringArrayVar(&f.values.Set, "set", nil, "chart value, key=value (repeatable; as helm --set)")
	c.Flags().StringArrayVarP(&f.values.Files, "values", "f", nil, "chart values file (repeatable; as helm --values)")
	c.Flags().StringArrayVar(&f.values.SetFile, "set-file", nil, "chart value from a file, key=path (repeatable; as helm --set-file)")
}

// imageTag is the image tag connectctl installs: its own version, so that
// the agents match the connectctl that installed them; none for a
// development build (the chart's appVersion then).
func imageTag() string {
	v := version.Get()
	if v == "dev" || v == "" {
		return ""
	}
	// An image tag is [A-Za-z0-9_.-], at most 128 characters (a Go
	// pseudo-version's "+dirty" becomes "-dirty").
	tag := []byte(v)
	for i, c := range tag {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			tag[i] = '-'
		}
	}
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return strings.TrimLeft(string(tag), ".-")
}

func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func getString(m map[string]any, path string) string {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return ""
		}
		m = next
	}
	s, _ := m[parts[len(parts)-1]].(string)
	return s
}

func notFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// releaseOf returns the agent release in the install's namespace (nil
// when there is none), refusing one of another cluster with what to do.
func releaseOf(in *install.Installer, name, todo string) (*release.Release, error) {
	cur, err := in.Release()
	if err != nil || cur == nil {
		return nil, err
	}
	if got := getString(cur.Config, "cluster.name"); got != name {
		return nil, fmt.Errorf("namespace %s holds the agents of cluster %q (release %s), not %q: %s", in.Namespace(), got, cur.Name, name, todo)
	}
	return cur, nil
}

// installAgents is `connectctl connect NAME --kubeconfig …`: register the
// cluster (or reuse its registration), put the registration token in a
// Secret, and install or upgrade the agent chart with the Helm SDK.
func installAgents(cmd *cobra.Command, g *globals, name string, f *installFlags, guard bool, proxyURL, proxyCA, noProxy string, tags map[string]string, ttl time.Duration) error {
	out := cmd.OutOrStdout()
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	prog := &install.Progress{W: out, Start: g.now(), Now: g.now}
	ch, src, err := install.LoadChart(f.chart, f.chartVersion)
	if err != nil {
		return err
	}
	prog.Step("chart %s %s (%s)", ch.Metadata.Name, ch.Metadata.Version, src)
	l, _, err := g.login(cmd)
	if err != nil {
		return err
	}
	cl, err := l.client()
	if err != nil {
		return err
	}
	base := map[string]any{}
	setPath(base, "relay.url", l.relay)
	if l.caFile != "" {
		b, err := os.ReadFile(l.caFile)
		if err != nil {
			return fmt.Errorf("the relay CA bundle %s (the agents trust it): %w", l.caFile, err)
		}
		setPath(base, "relay.caBundle", string(b))
	}
	if tag := imageTag(); tag != "" {
		setPath(base, "image.tag", tag)
	}
	if guard {
		setPath(base, "guard.enabled", true)
	}
	if proxyURL != "" {
		setPath(base, "proxy.httpsProxy", proxyURL)
	}
	if noProxy != "" {
		setPath(base, "proxy.noProxy", noProxy)
	}
	if proxyCA != "" {
		b, err := os.ReadFile(proxyCA)
		if err != nil {
			return fmt.Errorf("--proxy-ca: %w", err)
		}
		setPath(base, "proxy.caBundle", string(b))
	}
	vals, err := f.values.Merge(base)
	if err != nil {
		return err
	}
	if n := getString(vals, "cluster.name"); n != "" && n != name {
		return fmt.Errorf("--set cluster.name=%s contradicts the cluster name %s: drop it", n, name)
	}
	setPath(vals, "cluster.name", name)

	in, err := install.New(ctx, f.target, prog)
	if err != nil {
		return err
	}
	objs, err := in.Render(ctx, ch, vals)
	if err != nil {
		return err
	}
	if err := in.CheckPermissions(ctx, objs); err != nil {
		return err
	}
	cur, err := releaseOf(in, name, "disconnect it first, or pick another --namespace")
	if err != nil {
		return err
	}
	check := vals
	if cur != nil {
		check = loader.MergeMaps(cur.Config, vals) // what the upgrade will install
		if objs, err = in.Render(ctx, ch, check); err != nil {
			return err
		}
	}
	prog.Step("values checked against the chart's schema: %d objects to apply", len(objs))

	// Nothing was created so far; now the relay resource, then the cluster.
	regSecret := getString(check, "registration.secretName")
	if regSecret == "" {
		regSecret = getString(ch.Values, "registration.secretName")
	}
	idSecret := getString(check, "identitySecretName")
	if idSecret == "" {
		idSecret = getString(ch.Values, "identitySecretName")
	}
	hasReg, err := in.HasSecret(ctx, regSecret)
	if err != nil {
		return err
	}
	// A token in place but no identity yet may be spent or expired (pods
	// that never ran): a new one costs nothing.
	enrolled, err := in.HasSecret(ctx, idSecret)
	if err != nil {
		return err
	}
	var token string
	v, err := cl.GetCluster(ctx, name)
	switch {
	case notFound(err):
		if v, err = cl.CreateCluster(ctx, name, tags, ttl); err != nil {
			return err
		}
		token = v.RegistrationToken
		prog.Step("registered cluster %s at %s", name, l.relay)
	case err != nil:
		return err
	case !hasReg || !enrolled:
		if v, err = cl.NewRegistrationToken(ctx, name, ttl); err != nil {
			return err
		}
		token = v.RegistrationToken
		prog.Step("cluster %s is registered; issued a new registration token (one use, until %s)", name, v.RegistrationTokenExpiresAt.UTC().Format(time.RFC3339))
	default:
		prog.Step("cluster %s is registered and enrolled (Secret %s); no new token", name, idSecret)
	}
	if err := in.EnsureNamespace(ctx, name); err != nil {
		return err
	}
	if token != "" {
		if err := in.PutRegistrationSecret(ctx, regSecret, name, token); err != nil {
			return err
		}
	}
	if _, err := in.Apply(ctx, ch, vals, f.timeout); err != nil {
		return err
	}
	return printInstalled(ctx, cmd, cl, name, in.Namespace())
}

func printInstalled(ctx context.Context, cmd *cobra.Command, cl *Client, name, ns string) error {
	out := cmd.OutOrStdout()
	v, err := cl.GetCluster(ctx, name)
	if err != nil {
		return err
	}
	p := v.Properties
	fmt.Fprintf(out, "\nCluster %s: %s, %d tunnel(s) up, agent version %s.\n", name, p.ConnectivityStatus, p.Tunnels, orDash(p.AgentVersion))
	fmt.Fprintf(out, "The agents run as Deployments in namespace %s:\n  kubectl get deployments,pods -n %s -l app.kubernetes.io/part-of=clusterconnect-agent\n", ns, ns)
	fmt.Fprintf(out, "Once their pods run, the cluster turns Connected: connectctl show %s\n", name)
	return nil
}

func upgradeAgents(cmd *cobra.Command, g *globals, name string, f *installFlags) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	prog := &install.Progress{W: cmd.OutOrStdout(), Start: g.now(), Now: g.now}
	ch, src, err := install.LoadChart(f.chart, f.chartVersion)
	if err != nil {
		return err
	}
	prog.Step("chart %s %s (%s)", ch.Metadata.Name, ch.Metadata.Version, src)
	in, err := install.New(ctx, f.target, prog)
	if err != nil {
		return err
	}
	cur, err := releaseOf(in, name, "pick the --namespace of "+name+"'s agents")
	if err != nil {
		return err
	}
	if cur == nil {
		return fmt.Errorf("no agents of cluster %s in namespace %s (release %s): install them with `connectctl connect %s --kubeconfig %s --namespace %s`",
			name, in.Namespace(), f.target.ReleaseName, name, f.target.Kubeconfig, in.Namespace())
	}
	base := map[string]any{}
	if tag := imageTag(); tag != "" {
		setPath(base, "image.tag", tag)
	}
	vals, err := f.values.Merge(base)
	if err != nil {
		return err
	}
	setPath(vals, "cluster.name", name)
	objs, err := in.Render(ctx, ch, loader.MergeMaps(cur.Config, vals))
	if err != nil {
		return err
	}
	prog.Step("values checked against the chart's schema: %d objects to apply", len(objs))
	if err := in.CheckPermissions(ctx, objs); err != nil {
		return err
	}
	rel, err := in.Apply(ctx, ch, vals, f.timeout)
	if err != nil {
		return err
	}
	merged, err := chartutil.CoalesceValues(rel.Chart, rel.Config)
	if err == nil {
		prog.Step("agents now at image tag %s", orDash(getString(merged, "image.tag")))
	}
	cl, err := g.client(cmd)
	if err != nil {
		return err
	}
	return printInstalled(ctx, cmd, cl, name, in.Namespace())
}

func disconnectAgents(cmd *cobra.Command, g *globals, name string, f *installFlags, keepResource bool) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	prog := &install.Progress{W: cmd.OutOrStdout(), Start: g.now(), Now: g.now}
	var cl *Client
	if !keepResource {
		// Sign in first: a login problem should stop disconnect before
		// anything is removed.
		var err error
		if cl, err = g.client(cmd); err != nil {
			return err
		}
	}
	in, err := install.New(ctx, f.target, prog)
	if err != nil {
		return err
	}
	cur, err := releaseOf(in, name, "pick the --namespace of "+name+"'s agents")
	if err != nil {
		return err
	}
	if cur == nil {
		// Nothing ties this namespace to the cluster: delete nothing (a
		// wrong --namespace, --context or --release-name must not remove
		// the cluster at the relay).
		return fmt.Errorf("no agents of cluster %s in namespace %s (release %s) of this kubeconfig's cluster: nothing was changed; check --namespace, --context and --release-name (`connectctl delete %s` deletes only the cluster at the relay)",
			name, in.Namespace(), f.target.ReleaseName, name)
	}
	if _, err := in.Uninstall(ctx, name, f.timeout); err != nil {
		return err
	}
	if keepResource {
		prog.Step("kept cluster %s at the relay (--keep-resource): `connectctl connect %s --kubeconfig …` installs the agents again", name, name)
		return nil
	}
	switch err := cl.DeleteCluster(ctx, name); {
	case notFound(err):
		prog.Step("cluster %s was not registered at the relay", name)
	case err != nil:
		return fmt.Errorf("the agents are uninstalled, but deleting cluster %s at the relay failed (run `connectctl delete %s`): %w", name, name, err)
	default:
		prog.Step("deleted cluster %s at the relay", name)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "\nCluster %s is disconnected.\n", name)
	return nil
}

func upgradeCmd(g *globals) *cobra.Command {
	var f installFlags
	c := &cobra.Command{
		Use:   "upgrade NAME --kubeconfig FILE",
		Short: "Upgrade a cluster's agents to this connectctl's chart and version, keeping their values",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return upgradeAgents(cmd, g, args[0], &f)
		},
	}
	f.addTarget(c)
	f.addChart(c)
	_ = c.MarkFlagRequired("kubeconfig")
	return c
}

func disconnectCmd(g *globals) *cobra.Command {
	var f installFlags
	var keep bool
	c := &cobra.Command{
		Use:   "disconnect NAME --kubeconfig FILE",
		Short: "Uninstall a cluster's agents, then delete the cluster at the relay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return disconnectAgents(cmd, g, args[0], &f, keep)
		},
	}
	f.addTarget(c)
	c.Flags().BoolVar(&keep, "keep-resource", false, "only uninstall the agents; keep the cluster registered at the relay")
	_ = c.MarkFlagRequired("kubeconfig")
	return c
}
