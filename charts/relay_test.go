package charts

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// Helpers here carry a relay prefix: agent_test.go shares the package.

const (
	relayRelease   = "rel"
	relayNamespace = "cc"
	relayFullname  = "rel-relay"
)

// relayProduction are the Secrets a multi-replica (etcd) relay needs.
const relayProduction = `
kek: {secretName: relay-kek}
tls: {secretName: relay-tls, caKey: ca.crt}
adminToken: {secretName: relay-admin}
store:
  type: etcd
  etcd:
    endpoints: [https://etcd-0.etcd:2379, https://etcd-1.etcd:2379]
    clientSecretName: relay-etcd-client
`

// relayValues parses a YAML values document; "" is no values (the defaults).
func relayValues(t *testing.T, docs ...string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, doc := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("values %q: %v", doc, err)
		}
		out = relayMerge(out, m)
	}
	return out
}

func relayMerge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = relayMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func relayRender(t *testing.T, vals map[string]any, apiVersions ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	ch, err := Load(RelayChart)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return Render(context.Background(), ch, vals, RenderOptions{
		ReleaseName: relayRelease, Namespace: relayNamespace, APIVersions: apiVersions,
	})
}

// relayObjects indexes rendered objects by kind.
type relayObjects map[string][]*unstructured.Unstructured

func (o relayObjects) one(t *testing.T, kind string, into any) {
	t.Helper()
	if len(o[kind]) != 1 {
		t.Fatalf("%d objects of kind %s, want 1", len(o[kind]), kind)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o[kind][0].Object, into); err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
}

func (o relayObjects) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	o.one(t, "Deployment", &d)
	return &d
}

func relayContainer(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "relay" {
			return c
		}
	}
	t.Fatal("no container named relay")
	return nil
}

func relayVolume(t *testing.T, d *appsv1.Deployment, name string) *corev1.Volume {
	t.Helper()
	for i := range d.Spec.Template.Spec.Volumes {
		if v := &d.Spec.Template.Spec.Volumes[i]; v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s in %+v", name, d.Spec.Template.Spec.Volumes)
	return nil
}

func relayMount(t *testing.T, c *corev1.Container, name string) *corev1.VolumeMount {
	t.Helper()
	for i := range c.VolumeMounts {
		if m := &c.VolumeMounts[i]; m.Name == name {
			return m
		}
	}
	t.Fatalf("no volume mount %s", name)
	return nil
}

func relayWantArgs(t *testing.T, c *corev1.Container, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(c.Args, w) {
			t.Errorf("args lack %q:\n%s", w, strings.Join(c.Args, "\n"))
		}
	}
}

func relayNoArgPrefix(t *testing.T, c *corev1.Container, prefixes ...string) {
	t.Helper()
	for _, a := range c.Args {
		for _, p := range prefixes {
			if strings.HasPrefix(a, p) {
				t.Errorf("unexpected arg %q", a)
			}
		}
	}
}

func TestRelayRender(t *testing.T) {
	optional := []string{"Ingress", "TLSRoute", "HTTPRoute", "ServiceMonitor", "PodDisruptionBudget", "PersistentVolumeClaim"}
	cases := []struct {
		name        string
		values      []string
		apiVersions []string
		kinds       []string // optional kinds that must be there; the others must not
		check       func(t *testing.T, o relayObjects)
	}{{
		name:  "defaults",
		kinds: []string{"PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			d := o.deployment(t)
			if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
				t.Errorf("replicas %d strategy %s, want 1 and Recreate (embedded store)", *d.Spec.Replicas, d.Spec.Strategy.Type)
			}
			c := relayContainer(t, d)
			if c.Image != "ghcr.io/clusterconnect/relay:0.1.0" {
				t.Errorf("image %s, want the chart's appVersion as tag", c.Image)
			}
			relayWantArgs(t, c, "--listen=:8443", "--health-listen=:8444", "--data-dir=/var/lib/relay",
				"--external-url=https://rel-relay.cc.svc", "--audit-log=-", "--log-format=json")
			relayNoArgPrefix(t, c, "--store", "--etcd", "--kek-file", "--tls-cert-file", "--limit-", "--tenant", "--admin-token-file")
			if v := relayVolume(t, d, "data"); v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != relayFullname {
				t.Errorf("data volume %+v, want the chart's claim", v.VolumeSource)
			}
			if m := relayMount(t, c, "data"); m.MountPath != "/var/lib/relay" || m.ReadOnly {
				t.Errorf("data mount %+v, want writable /var/lib/relay", m)
			}
			var pvc corev1.PersistentVolumeClaim
			o.one(t, "PersistentVolumeClaim", &pvc)
			if got := pvc.Spec.Resources.Requests.Storage().String(); got != "1Gi" || pvc.Spec.StorageClassName != nil {
				t.Errorf("claim size %s class %v, want 1Gi and the default class", got, pvc.Spec.StorageClassName)
			}
			var svc corev1.Service
			o.one(t, "Service", &svc)
			ports := map[string]string{}
			for _, p := range svc.Spec.Ports {
				ports[p.Name] = fmt.Sprintf("%d->%s", p.Port, p.TargetPort.String())
			}
			if ports["https"] != "443->https" || ports["health"] != "8444->health" {
				t.Errorf("service ports %v", ports)
			}
		},
	}, {
		name:   "store etcd",
		values: []string{relayProduction},
		check: func(t *testing.T, o relayObjects) {
			d := o.deployment(t)
			if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
				t.Errorf("strategy %s, want RollingUpdate", d.Spec.Strategy.Type)
			}
			c := relayContainer(t, d)
			relayWantArgs(t, c,
				"--store=etcd",
				"--etcd-endpoints=https://etcd-0.etcd:2379,https://etcd-1.etcd:2379",
				"--etcd-cert=/etc/relay/etcd/tls.crt", "--etcd-key=/etc/relay/etcd/tls.key", "--etcd-ca=/etc/relay/etcd/ca.crt",
				"--kek-file=/etc/relay/kek/kek",
				"--tls-cert-file=/etc/relay/tls/tls.crt", "--tls-key-file=/etc/relay/tls/tls.key", "--ca-file=/etc/relay/tls/ca.crt",
				"--admin-token-file=/etc/relay/admin-token/token")
			if v := relayVolume(t, d, "data"); v.EmptyDir == nil {
				t.Errorf("data volume %+v, want an emptyDir with etcd", v.VolumeSource)
			}
			kek := relayVolume(t, d, "kek")
			if s := kek.Secret; s == nil || s.SecretName != "relay-kek" || s.DefaultMode == nil || *s.DefaultMode != 0o400 ||
				len(s.Items) != 1 || s.Items[0].Key != "kek" {
				t.Errorf("kek volume %+v, want Secret relay-kek, key kek, mode 0400", kek.VolumeSource)
			}
			if s := relayVolume(t, d, "etcd-client").Secret; s == nil || s.SecretName != "relay-etcd-client" || len(s.Items) != 3 {
				t.Errorf("etcd client volume %+v", s)
			}
			if s := relayVolume(t, d, "tls").Secret; s == nil || s.SecretName != "relay-tls" {
				t.Errorf("tls volume %+v", s)
			}
			for _, name := range []string{"tls", "kek", "etcd-client", "admin-token"} {
				if m := relayMount(t, c, name); !m.ReadOnly {
					t.Errorf("%s mounted writable", name)
				}
			}
		},
	}, {
		name:   "ingress",
		values: []string{`ingress: {enabled: true, className: nginx, hosts: ["*.clusters.relay.example.com", relay.example.com]}`},
		kinds:  []string{"Ingress", "PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			var ing networkingv1.Ingress
			o.one(t, "Ingress", &ing)
			if ing.Annotations["nginx.ingress.kubernetes.io/ssl-passthrough"] != "true" {
				t.Errorf("annotations %v, want ssl-passthrough", ing.Annotations)
			}
			if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" || len(ing.Spec.Rules) != 2 {
				t.Fatalf("ingress spec %+v", ing.Spec)
			}
			b := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service
			if ing.Spec.Rules[1].Host != "relay.example.com" || b.Name != relayFullname || b.Port.Name != "https" {
				t.Errorf("rule %+v backend %+v", ing.Spec.Rules[0], b)
			}
			relayWantArgs(t, relayContainer(t, o.deployment(t)), "--external-url=https://relay.example.com")
		},
	}, {
		name: "gateway tlsRoute",
		values: []string{`
gateway:
  tlsRoute: {enabled: true, hostnames: [relay.example.com], parentRefs: [{name: edge, namespace: gw, sectionName: tls}]}
config: {externalURL: "https://relay.example.com:8443"}`},
		kinds: []string{"TLSRoute", "PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			r := o["TLSRoute"][0]
			if r.GetAPIVersion() != "gateway.networking.k8s.io/v1alpha2" {
				t.Errorf("TLSRoute apiVersion %s", r.GetAPIVersion())
			}
			refs, _, _ := unstructured.NestedSlice(r.Object, "spec", "parentRefs")
			rules, _, _ := unstructured.NestedSlice(r.Object, "spec", "rules")
			if len(refs) != 1 || refs[0].(map[string]any)["sectionName"] != "tls" || len(rules) != 1 {
				t.Fatalf("TLSRoute spec %v", r.Object["spec"])
			}
			backend := rules[0].(map[string]any)["backendRefs"].([]any)[0].(map[string]any)
			if backend["name"] != relayFullname || fmt.Sprint(backend["port"]) != "443" {
				t.Errorf("backend %v", backend)
			}
			relayWantArgs(t, relayContainer(t, o.deployment(t)), "--external-url=https://relay.example.com:8443")
		},
	}, {
		name:   "gateway httpRoute",
		values: []string{`gateway: {httpRoute: {enabled: true, parentRefs: [{name: edge}]}}`},
		kinds:  []string{"HTTPRoute", "PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			if v := o["HTTPRoute"][0].GetAPIVersion(); v != "gateway.networking.k8s.io/v1" {
				t.Errorf("HTTPRoute apiVersion %s", v)
			}
		},
	}, {
		name:        "serviceMonitor with the API",
		values:      []string{`serviceMonitor: {enabled: true, labels: {release: prom}}`},
		apiVersions: []string{"monitoring.coreos.com/v1"},
		kinds:       []string{"ServiceMonitor", "PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			sm := o["ServiceMonitor"][0]
			eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if len(eps) != 1 {
				t.Fatalf("endpoints %v", eps)
			}
			ep := eps[0].(map[string]any)
			if ep["port"] != "health" || ep["path"] != "/metrics" || ep["interval"] != "30s" || sm.GetLabels()["release"] != "prom" {
				t.Errorf("ServiceMonitor %v labels %v", ep, sm.GetLabels())
			}
		},
	}, {
		name:   "serviceMonitor without the API",
		values: []string{`serviceMonitor: {enabled: true}`},
		kinds:  []string{"PersistentVolumeClaim"},
	}, {
		name:   "replicas 3 on etcd",
		values: []string{relayProduction, `replicas: 3`},
		kinds:  []string{"PodDisruptionBudget"},
		check: func(t *testing.T, o relayObjects) {
			if r := *o.deployment(t).Spec.Replicas; r != 3 {
				t.Errorf("replicas %d", r)
			}
			var pdb policyv1.PodDisruptionBudget
			o.one(t, "PodDisruptionBudget", &pdb)
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
				t.Errorf("pdb %+v, want maxUnavailable 1", pdb.Spec)
			}
			if pdb.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != relayRelease {
				t.Errorf("pdb selector %v", pdb.Spec.Selector)
			}
		},
	}, {
		name:   "pdb minAvailable",
		values: []string{`pdb: {enabled: true, minAvailable: "50%"}`},
		kinds:  []string{"PodDisruptionBudget", "PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			var pdb policyv1.PodDisruptionBudget
			o.one(t, "PodDisruptionBudget", &pdb)
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "50%" || pdb.Spec.MaxUnavailable != nil {
				t.Errorf("pdb %+v, want minAvailable 50%% alone", pdb.Spec)
			}
		},
	}, {
		name: "relay settings and pass-throughs",
		values: []string{`
image: {repository: registry.example/relay, tag: v9}
config:
  clusterHostSuffix: "-"
  location: westeurope
  certLifetime: 720h
  hostnames: [relay.internal]
  log: {level: debug}
entra: {tenants: [t1, t2], audiences: [api://relay], issuerURL: "https://login.example"}
limits: {callerRate: 50.5, clusterBurst: 3000, idleAfter: 5m}
kek: {secretName: k}
clusterCA: {secretName: ca}
extraArgs: [--max-streams=2048]
extraEnv: [{name: GOMEMLIMIT, value: 400MiB}]
persistence: {storageClass: "-", size: 5Gi}
probes: {startup: {enabled: true}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: relay, effect: NoSchedule}]
podAnnotations: {a: b}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
`},
		kinds: []string{"PersistentVolumeClaim"},
		check: func(t *testing.T, o relayObjects) {
			d := o.deployment(t)
			c := relayContainer(t, d)
			if c.Image != "registry.example/relay:v9" {
				t.Errorf("image %s", c.Image)
			}
			relayWantArgs(t, c, "--cluster-host-suffix=-", "--location=westeurope", "--cert-lifetime=720h",
				"--hostname=relay.internal", "--log-level=debug", "--tenant=t1,t2", "--audience=api://relay",
				"--issuer-url=https://login.example", "--limit-caller-rate=50.5", "--limit-cluster-burst=3000",
				"--limit-idle-after=5m", "--kek-file=/etc/relay/kek/kek",
				"--cluster-ca-cert-file=/etc/relay/cluster-ca/tls.crt", "--cluster-ca-key-file=/etc/relay/cluster-ca/tls.key",
				"--max-streams=2048")
			relayNoArgPrefix(t, c, "--limit-caller-burst", "--limit-cluster-rate")
			// POD_IP and POD_NAME (the fleet's --peer-url, --replica-id), then extraEnv.
			if n := len(c.Env); n != 3 || c.Env[0].Name != "POD_IP" || c.Env[n-1].Name != "GOMEMLIMIT" {
				t.Errorf("env %+v", c.Env)
			}
			if p := c.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "health" {
				t.Errorf("startup probe %+v", p)
			}
			spec := d.Spec.Template.Spec
			if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.Tolerations) != 1 || d.Spec.Template.Annotations["a"] != "b" {
				t.Errorf("pass-throughs: %v %v %v", spec.NodeSelector, spec.Tolerations, d.Spec.Template.Annotations)
			}
			if len(spec.TopologySpreadConstraints) != 1 ||
				spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["app.kubernetes.io/instance"] != relayRelease {
				t.Errorf("spread constraint without a selector should select the relay's pods: %+v", spec.TopologySpreadConstraints)
			}
			var pvc corev1.PersistentVolumeClaim
			o.one(t, "PersistentVolumeClaim", &pvc)
			if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" {
				t.Errorf("storageClass - should render an empty class, got %v", pvc.Spec.StorageClassName)
			}
		},
	}, {
		name:   "existing claim",
		values: []string{`persistence: {existingClaim: relay-data}`},
		check: func(t *testing.T, o relayObjects) {
			if v := relayVolume(t, o.deployment(t), "data"); v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "relay-data" {
				t.Errorf("data volume %+v", v.VolumeSource)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := relayRender(t, relayValues(t, tc.values...), tc.apiVersions...)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			o := relayObjects{}
			for _, obj := range objs {
				o[obj.GetKind()] = append(o[obj.GetKind()], obj)
			}
			for _, kind := range []string{"Deployment", "Service", "ServiceAccount"} {
				if len(o[kind]) != 1 {
					t.Errorf("%d objects of kind %s, want 1", len(o[kind]), kind)
				}
			}
			for _, kind := range optional {
				if want, got := slices.Contains(tc.kinds, kind), len(o[kind]) > 0; want != got {
					t.Errorf("%s rendered: %v, want %v", kind, got, want)
				}
			}
			relayCheckObjects(t, objs)
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// relayCheckObjects asserts what holds for every render: labels and names,
// the hardened pod of every workload, a service account without a token.
func relayCheckObjects(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	workloads := 0
	for _, obj := range objs {
		id := obj.GetKind() + "/" + obj.GetName()
		for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"} {
			if obj.GetLabels()[l] == "" {
				t.Errorf("%s lacks label %s", id, l)
			}
		}
		if obj.GetNamespace() != relayNamespace {
			t.Errorf("%s in namespace %q, want %q", id, obj.GetNamespace(), relayNamespace)
		}
		if obj.GetKind() == "ServiceAccount" {
			if v, ok, _ := unstructured.NestedBool(obj.Object, "automountServiceAccountToken"); !ok || v {
				t.Errorf("%s: automountServiceAccountToken %v (set: %v), want false", id, v, ok)
			}
		}
		tmpl := relayPodTemplate(t, obj)
		if tmpl == nil {
			continue
		}
		workloads++
		relayCheckPod(t, id, &tmpl.Spec)
	}
	if workloads == 0 {
		t.Error("no workload rendered")
	}
}

// relayPodTemplate is the pod template of a workload, nil for other kinds.
func relayPodTemplate(t *testing.T, obj *unstructured.Unstructured) *corev1.PodTemplateSpec {
	t.Helper()
	var path []string
	switch obj.GetKind() {
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		path = []string{"spec", "template"}
	case "CronJob":
		path = []string{"spec", "jobTemplate", "spec", "template"}
	case "Pod":
		var p corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &p); err != nil {
			t.Fatal(err)
		}
		return &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	default:
		return nil
	}
	m, _, err := unstructured.NestedMap(obj.Object, path...)
	if err != nil {
		t.Fatalf("%s: %v", obj.GetKind(), err)
	}
	var tmpl corev1.PodTemplateSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &tmpl); err != nil {
		t.Fatalf("%s: %v", obj.GetKind(), err)
	}
	return &tmpl
}

func relayCheckPod(t *testing.T, id string, spec *corev1.PodSpec) {
	t.Helper()
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken %v, want false", id, spec.AutomountServiceAccountToken)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.FSGroup == nil || *psc.FSGroup != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v, want runAsNonRoot, fsGroup 65532, seccomp RuntimeDefault", id, psc)
	}
	if len(spec.Containers) == 0 {
		t.Errorf("%s: no containers", id)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cid := id + " container " + c.Name
		if !slices.Equal(c.Command, []string{"/usr/local/bin/relay"}) {
			t.Errorf("%s: command %q, want [/usr/local/bin/relay] (the image's binary)", cid, c.Command)
		}
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: no securityContext", cid)
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot,
			sc.RunAsUser == nil || *sc.RunAsUser != 65532,
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0,
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("%s: securityContext %+v, want non-root 65532, read-only root, no privilege escalation, drop ALL, RuntimeDefault", cid, sc)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
				t.Errorf("%s: no %s request", cid, r)
			}
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
			t.Errorf("%s: no memory limit", cid)
		}
		healthPort := int32(0)
		for _, p := range c.Ports {
			if p.Name == "health" {
				healthPort = p.ContainerPort
			}
		}
		if healthPort == 0 || !slices.Contains(c.Args, fmt.Sprintf("--health-listen=:%d", healthPort)) {
			t.Errorf("%s: health port %d not what --health-listen serves on all addresses: %q", cid, healthPort, c.Args)
		}
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "health" {
				t.Errorf("%s: %s probe %+v, want httpGet on the health port", cid, name, p)
				continue
			}
			// The health listener serves /healthz and /readyz (relay.Server.Health).
			want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
			if p.HTTPGet.Path != want {
				t.Errorf("%s: %s probe path %s, want %s", cid, name, p.HTTPGet.Path, want)
			}
		}
	}
}

func TestRelayRejects(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   []string // substrings of the error
	}{
		{"negative replicas", []string{`replicas: -1`}, []string{"/replicas", "minimum"}},
		{"unknown top-level key", []string{`replica: 2`}, []string{"additional properties", "'replica'"}},
		{"unknown nested key", []string{`image: {tags: v1}`}, []string{"/image", "'tags'"}},
		{"unknown store", []string{`store: {type: sqlite}`}, []string{"/store/type", "'embedded'", "'etcd'"}},
		{"bad duration", []string{`config: {certLifetime: 90days}`}, []string{"/config/certLifetime"}},
		{"replicas 2 on embedded", []string{`replicas: 2`}, []string{"replicas is 2, but store.type embedded", "allows only 1 replica"}},
		{"etcd without endpoints", []string{relayProduction, `store: {etcd: {endpoints: []}}`}, []string{"store.etcd.endpoints"}},
		{"etcd without secrets", []string{`store: {type: etcd, etcd: {endpoints: ["https://etcd:2379"], clientSecretName: c}}`}, []string{"kek.secretName, tls.secretName and adminToken.secretName"}},
		{"ingress without hosts", []string{`ingress: {enabled: true}`}, []string{"ingress.hosts"}},
		{"entra half set", []string{`entra: {tenants: [t]}`}, []string{"entra.tenants and entra.audiences go together"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := relayRender(t, relayValues(t, tc.values...))
			if err == nil {
				t.Fatal("rendered, want an error")
			}
			t.Logf("%v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRelayLint(t *testing.T) {
	for name, vals := range map[string][]string{
		"defaults":   nil,
		"etcd":       {relayProduction, `replicas: 3`},
		"everything": {`ingress: {enabled: true, hosts: [r.example]}`, `gateway: {tlsRoute: {enabled: true, parentRefs: [{name: g}]}, httpRoute: {enabled: true, parentRefs: [{name: g}]}}`, `serviceMonitor: {enabled: true}`, `pdb: {enabled: true}`},
	} {
		t.Run(name, func(t *testing.T) {
			res := lint.RunAll(RelayChart, relayValues(t, vals...), relayNamespace)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %v", m)
				} else {
					t.Logf("lint: %v", m)
				}
			}
		})
	}
}

// TestRelayValuesDocumented holds values.yaml, values.schema.json and the
// README's table to each other: every value has a schema entry and a README
// row with its default; the schema has nothing values.yaml lacks; every
// object in the schema refuses unknown keys.
func TestRelayValuesDocumented(t *testing.T) {
	dir := RelayChart
	var values map[string]any
	relayReadYAML(t, filepath.Join(dir, "values.yaml"), &values)
	leaves := map[string]any{}
	relayLeaves("", values, leaves)
	if len(leaves) < 20 {
		t.Fatalf("only %d values: %v", len(leaves), leaves)
	}

	var schema map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if schema["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema %v, want draft-07", schema["$schema"])
	}
	defs, _ := schema["definitions"].(map[string]any)
	for key := range leaves {
		if relaySchemaAt(schema, defs, strings.Split(key, ".")) == nil {
			t.Errorf("value %s is not in values.schema.json", key)
		}
	}
	relaySchemaExtra(t, "", schema, values, defs)
	relayClosedObjects(t, "#", schema)

	rows := relayReadmeRows(t, filepath.Join(dir, "README.md"))
	for key, v := range leaves {
		row, ok := rows[key]
		if !ok {
			t.Errorf("value %s is not in README.md's table", key)
			continue
		}
		def, _ := json.Marshal(v)
		if want := "`" + string(def) + "`"; row[0] != want {
			t.Errorf("README.md: %s default %s, values.yaml has %s", key, row[0], want)
		}
		if strings.TrimSpace(row[1]) == "" {
			t.Errorf("README.md: %s has no description", key)
		}
	}
	for key := range rows {
		if _, ok := leaves[key]; !ok {
			t.Errorf("README.md lists %s, values.yaml does not have it", key)
		}
	}
}

func relayReadYAML(t *testing.T, file string, into any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// relayLeaves flattens values into dotted keys; an empty map is a leaf
// (a pass-through such as podAnnotations).
func relayLeaves(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		out[prefix] = v
		return
	}
	for k, sub := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		relayLeaves(key, sub, out)
	}
}

// relayResolve follows a local $ref (and a single allOf of one) to its definition.
func relayResolve(node map[string]any, defs map[string]any) map[string]any {
	for range 10 {
		if all, ok := node["allOf"].([]any); ok && len(all) == 1 && node["properties"] == nil {
			node, _ = all[0].(map[string]any)
			continue
		}
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		node, _ = defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
	}
	return node
}

func relaySchemaAt(node map[string]any, defs map[string]any, path []string) map[string]any {
	for _, p := range path {
		props, _ := relayResolve(node, defs)["properties"].(map[string]any)
		next, ok := props[p].(map[string]any)
		if !ok {
			return nil
		}
		node = next
	}
	return node
}

// relayOptionalValues are keys the schema accepts that values.yaml leaves out.
var relayOptionalValues = []string{"resources.requests.ephemeral-storage", "resources.limits.ephemeral-storage"}

// relaySchemaExtra reports schema properties that values.yaml lacks, at
// every level where values.yaml has a map with keys (below that, as in
// affinity, the schema describes a Kubernetes type values.yaml leaves empty).
func relaySchemaExtra(t *testing.T, prefix string, node map[string]any, values map[string]any, defs map[string]any) {
	t.Helper()
	props, _ := relayResolve(node, defs)["properties"].(map[string]any)
	for k, sub := range props {
		key := strings.TrimPrefix(prefix+"."+k, ".")
		v, ok := values[k]
		if !ok && !slices.Contains(relayOptionalValues, key) {
			t.Errorf("values.schema.json has %s, values.yaml does not", key)
			continue
		}
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			subm, _ := sub.(map[string]any)
			relaySchemaExtra(t, key, subm, m, defs)
		}
	}
}

// relayClosedObjects fails on an object schema that does not say what to do
// with unknown keys: false, or a typed map (labels, annotations).
func relayClosedObjects(t *testing.T, at string, v any) {
	t.Helper()
	switch n := v.(type) {
	case []any:
		for i, sub := range n {
			relayClosedObjects(t, fmt.Sprintf("%s/%d", at, i), sub)
		}
	case map[string]any:
		isObject := n["type"] == "object"
		if types, ok := n["type"].([]any); ok {
			isObject = slices.Contains(types, any("object"))
		}
		if isObject {
			switch ap := n["additionalProperties"].(type) {
			case bool:
				if ap {
					t.Errorf("schema %s: additionalProperties true", at)
				}
			case map[string]any:
				if ap["type"] != "string" || n["properties"] != nil {
					t.Errorf("schema %s: additionalProperties %v, want false (or a map of strings)", at, ap)
				}
			default:
				t.Errorf("schema %s: object without additionalProperties: false", at)
			}
		}
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "additionalProperties" {
				continue
			}
			relayClosedObjects(t, at+"/"+k, n[k])
		}
	}
}

// relayReadmeRows reads README.md's value table: | `key` | default | description |.
func relayReadmeRows(t *testing.T, file string) map[string][2]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string][2]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := relaySplitRow(line)
		if len(cells) != 3 {
			t.Errorf("README.md row %q: want 3 cells, got %d", line, len(cells))
			continue
		}
		key := strings.Trim(cells[0], "`")
		if _, dup := rows[key]; dup {
			t.Errorf("README.md lists %s twice", key)
		}
		rows[key] = [2]string{cells[1], cells[2]}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// relaySplitRow splits a Markdown table row on the pipes outside code spans.
func relaySplitRow(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cell strings.Builder
	code := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '`':
			code = !code
			cell.WriteByte(c)
		case c == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case c == '|' && !code:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(c)
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}
