// Package metadata is the cluster-metadata role: it reads, with client-go,
// what the relay shows about a cluster — Kubernetes version, node count,
// allocatable cores, distribution and infrastructure — and the agent version.
package metadata

import (
	"context"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Collector gathers the api.Metadata a heartbeat carries.
type Collector struct {
	Client       kubernetes.Interface
	AgentVersion string
	// Namespace, when set, is where the agent chart deployed the roles:
	// their health is reported as Metadata.Agents (see Agents).
	Namespace string
}

// Collect reads the server version and lists the nodes (in pages, so large
// clusters are fine).
func (c *Collector) Collect(ctx context.Context) (api.Metadata, error) {
	md := api.Metadata{AgentVersion: c.AgentVersion}
	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		return md, fmt.Errorf("read the server version: %w", err)
	}
	md.KubernetesVersion = v.GitVersion
	var milliCores int64
	var nodes []corev1.Node
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := c.Client.CoreV1().Nodes().List(ctx, opts)
		if err != nil {
			return md, fmt.Errorf("list nodes (the agent needs list on nodes): %w", err)
		}
		for _, n := range list.Items {
			md.TotalNodeCount++
			if q, ok := n.Status.Allocatable[corev1.ResourceCPU]; ok {
				milliCores += q.MilliValue()
			} else if q, ok := n.Status.Capacity[corev1.ResourceCPU]; ok {
				milliCores += q.MilliValue()
			}
			if len(nodes) < 10 {
				nodes = append(nodes, n)
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	md.TotalCoreCount = int(milliCores / 1000)
	md.Distribution, md.Infrastructure = Guess(v.GitVersion, nodes)
	if c.Namespace != "" {
		if md.Agents, err = Agents(ctx, c); err != nil {
			// The cluster's facts still go; the error shows where the
			// roles would.
			md.Agents = []api.AgentRole{{Role: "sync", LastError: bound(err.Error())}}
		}
	}
	return md, nil
}

// Guess names the distribution and the infrastructure from the server
// version and a sample of nodes (labels and provider IDs), as Arc's
// cluster-metadata-operator does; "generic" when nothing gives it away.
func Guess(gitVersion string, nodes []corev1.Node) (distribution, infrastructure string) {
	distribution, infrastructure = "generic", "generic"
	switch {
	case strings.Contains(gitVersion, "-eks-"):
		distribution = "eks"
	case strings.Contains(gitVersion, "-gke."):
		distribution = "gke"
	case strings.Contains(gitVersion, "+k3s"):
		distribution = "k3s"
	case strings.Contains(gitVersion, "+rke2"):
		distribution = "rke2"
	}
	for _, n := range nodes {
		l := n.Labels
		switch {
		case l["kubernetes.azure.com/cluster"] != "":
			distribution = "aks"
		case l["eks.amazonaws.com/nodegroup"] != "":
			distribution = "eks"
		case l["cloud.google.com/gke-nodepool"] != "":
			distribution = "gke"
		case l["node.openshift.io/os_id"] != "":
			distribution = "openshift"
		case l["minikube.k8s.io/name"] != "":
			distribution = "minikube"
		}
		scheme, _, _ := strings.Cut(n.Spec.ProviderID, "://")
		switch scheme {
		case "azure":
			infrastructure = "azure"
		case "aws":
			infrastructure = "aws"
		case "gce":
			infrastructure = "gcp"
		case "vsphere":
			infrastructure = "vsphere"
		case "openstack":
			infrastructure = "openstack"
		case "kind":
			distribution, infrastructure = "kind", "docker"
		case "k3s":
			distribution = "k3s"
		}
	}
	return distribution, infrastructure
}
