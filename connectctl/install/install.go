// Package install installs, upgrades and uninstalls the agent chart in a
// cluster with the Helm SDK (helm.sh/helm/v4), the way `az connectedk8s
// connect` deploys Arc's agents: connectctl's connect, upgrade and
// disconnect commands are thin layers over it.
package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/registry"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"helm.sh/helm/v4/pkg/strvals"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/clusterconnect/clusterconnect/charts"
)

// Defaults of the install.
const (
	DefaultNamespace   = "clusterconnect"
	DefaultReleaseName = "clusterconnect-agent"
	// RegistrationKey is the key of the registration Secret the chart's
	// identity role reads the token from.
	RegistrationKey = "token"
)

// Labels connectctl puts on what it creates outside the release (the
// namespace, the registration Secret), so that disconnect removes them.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "connectctl"
	ClusterLabel   = "clusterconnect.io/cluster"
	// identityManagedBy is the identity role's label on its Secret (whose
	// ClusterLabel annotation names the cluster).
	identityManagedBy = "clusterconnect"
)

// Target is the cluster to install into.
type Target struct {
	// Kubeconfig and Context select the cluster (Context empty: the
	// kubeconfig's current context).
	Kubeconfig, Context string
	Namespace           string
	ReleaseName         string
}

func (t *Target) defaults() {
	if t.Namespace == "" {
		t.Namespace = DefaultNamespace
	}
	if t.ReleaseName == "" {
		t.ReleaseName = DefaultReleaseName
	}
}

// Values are the chart values a user gives, in Helm's precedence: Files
// (--values, in order), then Set (--set), then SetFile (--set-file,
// key=path).
type Values struct {
	Files   []string
	Set     []string
	SetFile []string
}

// Merge returns base overlaid with the user's values.
func (v Values) Merge(base map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for k, x := range base {
		out[k] = x
	}
	for _, f := range v.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", f, err)
		}
		m, err := chartcommon.ReadValues(b)
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", f, err)
		}
		out = loader.MergeMaps(out, m)
	}
	for _, s := range v.Set {
		if err := strvals.ParseInto(s, out); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	for _, s := range v.SetFile {
		if err := strvals.ParseIntoFile(s, out, func(rs []rune) (any, error) {
			b, err := os.ReadFile(string(rs))
			return string(b), err
		}); err != nil {
			return nil, fmt.Errorf("--set-file %s: %w", s, err)
		}
	}
	return out, nil
}

// LoadChart loads the chart to install: the one embedded in connectctl
// when ref is empty, else a chart directory or archive, or an oci://
// reference (pulled with the Helm registry client and its credentials,
// `helm registry login`).
func LoadChart(ref, version string) (*chart.Chart, string, error) {
	if ref == "" {
		ch, err := charts.Load(charts.AgentChart)
		return ch, "embedded", err
	}
	src := ref
	if registry.IsOCI(ref) {
		settings := cli.New()
		rc, err := registry.NewClient(registry.ClientOptCredentialsFile(settings.RegistryConfig), registry.ClientOptWriter(io.Discard))
		if err != nil {
			return nil, "", fmt.Errorf("--chart %s: registry client: %w", ref, err)
		}
		inst := action.NewInstall(action.NewConfiguration())
		inst.SetRegistryClient(rc)
		inst.Version = version
		if src, err = inst.LocateChart(ref, settings); err != nil {
			return nil, "", fmt.Errorf("--chart %s: %w", ref, err)
		}
	}
	ch, err := loader.Load(src)
	if err != nil {
		return nil, "", fmt.Errorf("--chart %s: %w", ref, err)
	}
	if ch.Metadata.Name != charts.AgentChart {
		return nil, "", fmt.Errorf("--chart %s is chart %q, not %s", ref, ch.Metadata.Name, charts.AgentChart)
	}
	return ch, ref, nil
}

// Installer talks to one cluster: its Kubernetes API and Helm's release
// storage (Secrets in the namespace).
type Installer struct {
	t      Target
	rest   *rest.Config
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	cfg    *action.Configuration
	// server is the apiserver's version, e.g. v1.33.2.
	server string
	// Progress receives one line per step; nil discards them.
	Progress *Progress
}

// New connects to the cluster of t, checking that its apiserver answers.
func New(ctx context.Context, t Target, progress *Progress) (*Installer, error) {
	t.defaults()
	if t.Kubeconfig == "" {
		return nil, errors.New("--kubeconfig is required: the kubeconfig of the cluster to install the agents into (an admin's: the install creates a namespace, ClusterRoles and their bindings)")
	}
	if _, err := os.Stat(t.Kubeconfig); err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &t.Kubeconfig
	flags.Namespace = &t.Namespace
	if t.Context != "" {
		flags.Context = &t.Context
	}
	rc, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", t.Kubeconfig, err)
	}
	rc.UserAgent = "connectctl"
	rc.Timeout = 30 * time.Second
	in := &Installer{t: t, rest: rc, Progress: progress}
	if in.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	if in.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return nil, err
	}
	v, err := in.kube.Discovery().ServerVersion()
	if err != nil {
		return nil, unreachable(rc.Host, t, err)
	}
	in.server = v.GitVersion
	in.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(in.kube.Discovery()))
	in.cfg = action.NewConfiguration()
	in.cfg.SetLogger(slog.DiscardHandler)
	if err := in.cfg.Init(flags, t.Namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	in.Progress.Step("reached the apiserver at %s (Kubernetes %s)", rc.Host, v.GitVersion)
	return in, nil
}

func unreachable(host string, t Target, err error) error {
	hint := "check --kubeconfig and --context, and that the apiserver is up"
	var ne net.Error
	var ue *url.Error
	switch {
	case apierrors.IsUnauthorized(err):
		hint = "the kubeconfig's credentials were refused: get a fresh kubeconfig"
	case errors.As(err, &ne) && ne.Timeout(), errors.As(err, &ue):
		hint = "the apiserver did not answer: " + hint
	}
	return fmt.Errorf("cannot reach the apiserver at %s (kubeconfig %s): %w; %s", host, t.Kubeconfig, err, hint)
}

// Namespace is the namespace of the install.
func (in *Installer) Namespace() string { return in.t.Namespace }

// Release returns the installed release, nil if there is none.
func (in *Installer) Release() (*release.Release, error) {
	r, err := action.NewGet(in.cfg).Run(in.t.ReleaseName)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the release %s in %s: %w", in.t.ReleaseName, in.t.Namespace, err)
	}
	rel, ok := r.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("release %s: unexpected type %T", in.t.ReleaseName, r)
	}
	return rel, nil
}

// Render renders ch with vals client-side (schema and the chart's own
// checks), the check that comes before anything is created.
func (in *Installer) Render(ctx context.Context, ch *chart.Chart, vals map[string]any) ([]*unstructured.Unstructured, error) {
	objs, err := charts.Render(ctx, ch, vals, charts.RenderOptions{ReleaseName: in.t.ReleaseName, Namespace: in.t.Namespace, KubeVersion: in.server})
	if err != nil {
		return nil, fmt.Errorf("chart values: %w\nnothing was changed: fix the values named above (--set, --values, --set-file) and run again", err)
	}
	return objs, nil
}

// CheckPermissions asks the apiserver (SelfSubjectAccessReview) whether
// the caller may create every kind of object in objs, plus the namespace
// if it does not exist, and says which are missing.
func (in *Installer) CheckPermissions(ctx context.Context, objs []*unstructured.Unstructured) error {
	type need struct{ group, resource, ns string }
	var needs []need
	seen := map[need]bool{}
	add := func(n need) {
		if !seen[n] {
			seen[n] = true
			needs = append(needs, n)
		}
	}
	// A namespace that is not there, or that the user may not even see,
	// must be creatable.
	if _, err := in.kube.CoreV1().Namespaces().Get(ctx, in.t.Namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		add(need{"", "namespaces", ""})
	}
	add(need{"", "secrets", in.t.Namespace}) // the registration Secret and Helm's release records
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := in.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("the cluster does not serve %s (%s): %w", gvk.Kind, gvk.GroupVersion(), err)
		}
		n := need{group: gvk.Group, resource: m.Resource.Resource}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			n.ns = in.t.Namespace
		}
		add(n)
	}
	var missing []string
	for _, n := range needs {
		r, err := in.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
			Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
				Verb: "create", Group: n.group, Resource: n.resource, Namespace: n.ns,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("ask the apiserver what you may create: %w", err)
		}
		if !r.Status.Allowed {
			what := n.resource
			if n.group != "" {
				what += "." + n.group
			}
			if n.ns != "" {
				what += " in namespace " + n.ns
			} else {
				what += " (cluster-wide)"
			}
			missing = append(missing, what)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the kubeconfig's user may not create %s: the agents need them; use a cluster admin's kubeconfig (or ask one to grant create on them)",
			strings.Join(missing, ", "))
	}
	in.Progress.Step("permissions checked: you may create the %d kinds of object the chart needs", len(needs))
	return nil
}

// EnsureNamespace creates the namespace if it does not exist, labelled as
// connectctl's (disconnect then deletes it).
func (in *Installer) EnsureNamespace(ctx context.Context, cluster string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: in.t.Namespace,
		Labels: map[string]string{ManagedByLabel: ManagedByValue, ClusterLabel: cluster}}}
	_, err := in.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	switch {
	case err == nil:
		in.Progress.Step("created namespace %s", in.t.Namespace)
	case apierrors.IsAlreadyExists(err):
		in.Progress.Step("namespace %s exists", in.t.Namespace)
	default:
		return fmt.Errorf("create namespace %s: %w", in.t.Namespace, err)
	}
	return nil
}

// HasSecret reports whether Secret name exists in the namespace.
func (in *Installer) HasSecret(ctx context.Context, name string) (bool, error) {
	_, err := in.kube.CoreV1().Secrets(in.t.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// PutRegistrationSecret writes the one-time token into the Secret the
// identity role mounts (created outside the release, so the token is never
// part of the release's values).
func (in *Installer) PutRegistrationSecret(ctx context.Context, name, cluster, token string) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: in.t.Namespace,
			Labels: map[string]string{ManagedByLabel: ManagedByValue, ClusterLabel: cluster}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{RegistrationKey: []byte(token + "\n")},
	}
	secrets := in.kube.CoreV1().Secrets(in.t.Namespace)
	_, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("write the registration Secret %s/%s: %w", in.t.Namespace, name, err)
	}
	in.Progress.Step("registration token stored in Secret %s/%s", in.t.Namespace, name)
	return nil
}

// Apply installs the chart, or upgrades the release if there is one
// (keeping the values the release was installed with, under vals, over the
// new chart's defaults). It waits only for the objects to exist, not for
// pods to be ready. It
// does not wait for pods to be ready, only for the objects to exist.
func (in *Installer) Apply(ctx context.Context, ch *chart.Chart, vals map[string]any, timeout time.Duration) (*release.Release, error) {
	cur, err := in.Release()
	if err != nil {
		return nil, err
	}
	var r any
	if cur == nil {
		inst := action.NewInstall(in.cfg)
		inst.ReleaseName = in.t.ReleaseName
		inst.Namespace = in.t.Namespace
		inst.WaitStrategy = kube.HookOnlyStrategy
		inst.Timeout = timeout
		inst.Labels = map[string]string{ManagedByLabel: ManagedByValue}
		r, err = inst.RunWithContext(ctx, ch, vals)
	} else {
		up := action.NewUpgrade(in.cfg)
		up.Namespace = in.t.Namespace
		up.WaitStrategy = kube.HookOnlyStrategy
		up.Timeout = timeout
		// The new chart's defaults, then the values the release was
		// installed with, then vals: a newer chart's new keys get their
		// defaults (plain ReuseValues would keep the old chart's).
		up.ResetThenReuseValues = true
		up.MaxHistory = 5
		r, err = up.RunWithContext(ctx, in.t.ReleaseName, ch, vals)
	}
	if err != nil {
		return nil, helmError(err)
	}
	rel, ok := r.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("release %s: unexpected type %T", in.t.ReleaseName, r)
	}
	verb := "installed"
	if cur != nil {
		verb = "upgraded"
	}
	in.Progress.Step("%s release %s (chart %s %s, revision %d)", verb, rel.Name, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version, rel.Version)
	return rel, in.waitObjects(ctx, rel)
}

// helmError adds what to do to Helm's errors that need it.
func helmError(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "is forbidden"):
		return fmt.Errorf("%w: use a cluster admin's kubeconfig (creating ClusterRoles that grant impersonation needs those rights yourself)", err)
	case strings.Contains(msg, "another operation (install/upgrade/rollback) is in progress"):
		return fmt.Errorf("%w: wait for it, or roll back the stuck release with `helm rollback`", err)
	}
	return err
}

// waitObjects waits until every object of the release's manifest exists in
// the cluster (no controller is needed for that).
func (in *Installer) waitObjects(ctx context.Context, rel *release.Release) error {
	objs, err := charts.SplitManifest(rel.Manifest)
	if err != nil {
		return err
	}
	var kinds []string
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := in.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return err
		}
		var ri dynamic.ResourceInterface = in.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = in.dyn.Resource(m.Resource).Namespace(in.t.Namespace)
		}
		for {
			_, err = ri.Get(ctx, o.GetName(), metav1.GetOptions{})
			if err == nil || !apierrors.IsNotFound(err) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s %s did not appear: %w", gvk.Kind, o.GetName(), ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
		if err != nil {
			return fmt.Errorf("read %s %s: %w", gvk.Kind, o.GetName(), err)
		}
		if !slices.Contains(kinds, gvk.Kind) {
			kinds = append(kinds, gvk.Kind)
		}
	}
	in.Progress.Step("all %d objects exist (%s)", len(objs), strings.Join(kinds, ", "))
	return nil
}

// Uninstall removes the release (if any), then what was created beside it
// for cluster: the registration Secret (connectctl's label), the identity
// Secret (the identity role's label, this cluster's annotation), and the
// namespace if connectctl created it for this cluster and no other Helm
// release is left in it. It reports whether there was a release.
func (in *Installer) Uninstall(ctx context.Context, cluster string, timeout time.Duration) (bool, error) {
	cur, err := in.Release()
	if err != nil {
		return false, err
	}
	regSecret, idSecret := "clusterconnect-registration", "clusterconnect-identity"
	if cur != nil {
		merged, err := chartutil.CoalesceValues(cur.Chart, cur.Config)
		if err == nil {
			if s, ok := merged["identitySecretName"].(string); ok && s != "" {
				idSecret = s
			}
			if reg, ok := merged["registration"].(map[string]any); ok {
				if s, ok := reg["secretName"].(string); ok && s != "" {
					regSecret = s
				}
			}
		}
		un := action.NewUninstall(in.cfg)
		un.WaitStrategy = kube.HookOnlyStrategy
		un.Timeout = timeout
		un.DeletionPropagation = "background"
		un.IgnoreNotFound = true
		if _, err := un.Run(in.t.ReleaseName); err != nil {
			return true, helmError(err)
		}
		in.Progress.Step("uninstalled release %s", in.t.ReleaseName)
	} else {
		in.Progress.Step("no release %s in namespace %s", in.t.ReleaseName, in.t.Namespace)
	}
	secrets := in.kube.CoreV1().Secrets(in.t.Namespace)
	for _, name := range []string{regSecret, idSecret} {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return cur != nil, fmt.Errorf("read Secret %s/%s: %w", in.t.Namespace, name, err)
		}
		ours := s.Labels[ManagedByLabel] == ManagedByValue && s.Labels[ClusterLabel] == cluster ||
			s.Labels[ManagedByLabel] == identityManagedBy && s.Annotations[ClusterLabel] == cluster
		if !ours {
			in.Progress.Step("kept Secret %s/%s: not made for cluster %s by connectctl or its identity role", in.t.Namespace, name, cluster)
			continue
		}
		if err := secrets.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return cur != nil, fmt.Errorf("delete Secret %s/%s: %w", in.t.Namespace, name, err)
		}
		in.Progress.Step("deleted Secret %s/%s", in.t.Namespace, name)
	}
	ns, err := in.kube.CoreV1().Namespaces().Get(ctx, in.t.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return cur != nil, fmt.Errorf("read namespace %s: %w", in.t.Namespace, err)
	case ns.Labels[ManagedByLabel] != ManagedByValue || ns.Labels[ClusterLabel] != cluster || ns.DeletionTimestamp != nil:
	default:
		if others, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"}); err != nil {
			return cur != nil, fmt.Errorf("list Helm releases in %s: %w", in.t.Namespace, err)
		} else if len(others.Items) > 0 {
			in.Progress.Step("kept namespace %s: other Helm releases are in it", in.t.Namespace)
			break
		}
		if err := in.kube.CoreV1().Namespaces().Delete(ctx, in.t.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return cur != nil, fmt.Errorf("delete namespace %s: %w", in.t.Namespace, err)
		}
		in.Progress.Step("deleted namespace %s (connectctl created it)", in.t.Namespace)
	}
	return cur != nil, nil
}

// Progress prints numbered steps with the time since the start.
type Progress struct {
	W     io.Writer
	Start time.Time
	Now   func() time.Time
}

// Step prints one step.
func (p *Progress) Step(format string, args ...any) {
	if p == nil || p.W == nil {
		return
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	fmt.Fprintf(p.W, "[%5.1fs] %s\n", now().Sub(p.Start).Seconds(), fmt.Sprintf(format, args...))
}
