// Package charts holds the Helm charts of cluster connect, embedded so that
// connectctl installs the agent chart offline, and renders them with the
// Helm SDK (helm.sh/helm/v4) the way `helm template` does.
//
//   - clusterconnect-agent: the in-cluster agent set (connectctl connect).
//   - relay: the relay as a service.
package charts

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The directory names of the charts in this package.
const (
	AgentChart = "clusterconnect-agent"
	RelayChart = "relay"
)

//go:embed all:clusterconnect-agent all:relay
var files embed.FS

// Load loads the embedded chart in directory name (AgentChart, RelayChart).
func Load(name string) (*chart.Chart, error) {
	var bf []*archive.BufferedFile
	err := fs.WalkDir(files, name, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		bf = append(bf, &archive.BufferedFile{Name: strings.TrimPrefix(p, name+"/"), Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded chart %s: %w", name, err)
	}
	if len(bf) == 0 {
		return nil, fmt.Errorf("embedded chart %s: no such chart", name)
	}
	return loader.LoadFiles(bf)
}

// RenderOptions are what a render needs besides the chart and values.
type RenderOptions struct {
	ReleaseName, Namespace string
	// APIVersions are added to the default capabilities (e.g.
	// "monitoring.coreos.com/v1" for the ServiceMonitor).
	APIVersions []string
	// KubeVersion is the Kubernetes version to render for (the chart's
	// kubeVersion is checked against it), e.g. the target's "v1.33.2";
	// empty means Helm's default.
	KubeVersion string
}

// Render renders ch with vals client-side, as `helm template` does
// (schema validation included), and returns the objects in manifest order.
func Render(ctx context.Context, ch *chart.Chart, vals map[string]any, o RenderOptions) ([]*unstructured.Unstructured, error) {
	inst := action.NewInstall(action.NewConfiguration())
	inst.DryRunStrategy = action.DryRunClient
	inst.Replace = true
	inst.ReleaseName = o.ReleaseName
	inst.Namespace = o.Namespace
	inst.APIVersions = common.VersionSet(o.APIVersions)
	if o.KubeVersion != "" {
		kv, err := common.ParseKubeVersion(o.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("render: Kubernetes version %q: %w", o.KubeVersion, err)
		}
		inst.KubeVersion = kv
	}
	rel, err := inst.RunWithContext(ctx, ch, vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("render: unexpected release type %T", rel)
	}
	return SplitManifest(r.Manifest)
}

// SplitManifest parses a multi-document YAML manifest into objects,
// skipping empty documents.
func SplitManifest(manifest string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewBufferString(manifest), 4096)
	for {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}
