package metadata

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// The labels the agent chart puts on each role's Deployment and pods.
const (
	PartOfLabel    = "app.kubernetes.io/part-of"
	PartOfValue    = "clusterconnect-agent"
	ComponentLabel = "app.kubernetes.io/component" // the role
	VersionLabel   = "app.kubernetes.io/version"
	InstanceLabel  = "app.kubernetes.io/instance" // the Helm release
)

// maxLastError bounds the error text reported per role.
const maxLastError = 512

// Agents reads the health of the agent roles in namespace: one entry per
// Deployment of the agent chart, sorted by role, with the latest error its
// pods show. It needs list on deployments and pods in that namespace.
func Agents(ctx context.Context, c *Collector) ([]api.AgentRole, error) {
	sel := metav1.ListOptions{LabelSelector: PartOfLabel + "=" + PartOfValue}
	deps, err := c.Client.AppsV1().Deployments(c.Namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the agent Deployments in %s (the sync role needs list on deployments there): %w", c.Namespace, err)
	}
	pods, err := c.Client.CoreV1().Pods(c.Namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the agent pods in %s (the sync role needs list on pods there): %w", c.Namespace, err)
	}
	var out []api.AgentRole
	for i := range deps.Items {
		d := &deps.Items[i]
		role := d.Labels[ComponentLabel]
		if role == "" {
			role = d.Name
		}
		want := 1
		if d.Spec.Replicas != nil {
			want = int(*d.Spec.Replicas)
		}
		r := api.AgentRole{
			Role:          role,
			Version:       d.Labels[VersionLabel],
			Replicas:      want,
			ReadyReplicas: int(d.Status.ReadyReplicas),
		}
		r.Ready = want > 0 && r.ReadyReplicas >= want
		r.LastError = lastError(d, pods.Items)
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role < out[j].Role })
	return out, nil
}

// lastError is the most telling problem of d: a pod's container that waits
// for a reason other than starting, else the last termination message of a
// container that is not ready, else a false Available condition.
func lastError(d *appsv1.Deployment, pods []corev1.Pod) string {
	var msg string
	for i := range pods {
		p := &pods[i]
		if p.Labels[ComponentLabel] != d.Labels[ComponentLabel] || p.Labels[InstanceLabel] != d.Labels[InstanceLabel] {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
				return bound(cs.Name + ": " + w.Reason + ": " + w.Message)
			}
			// A crash before the container became ready again is history,
			// not the role's state (guard restarts until the identity
			// role has enrolled, once).
			if t := cs.LastTerminationState.Terminated; t != nil && msg == "" && t.ExitCode != 0 && !cs.Ready {
				msg = fmt.Sprintf("%s: exited %d (%s): %s", cs.Name, t.ExitCode, t.Reason, t.Message)
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && msg == "" {
				msg = "pod not scheduled: " + c.Reason + ": " + c.Message
			}
		}
	}
	if msg == "" {
		for _, c := range d.Status.Conditions {
			if (c.Type == appsv1.DeploymentAvailable || c.Type == appsv1.DeploymentReplicaFailure) &&
				c.Status == corev1.ConditionFalse && c.Message != "" {
				msg = string(c.Type) + ": " + c.Message
			}
		}
	}
	return bound(msg)
}

func bound(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxLastError {
		s = strings.ToValidUTF8(s[:maxLastError], "") + "…"
	}
	return s
}
