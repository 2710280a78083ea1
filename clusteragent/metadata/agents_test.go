package metadata

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestAgentsReportsEachRole(t *testing.T) {
	labels := func(role string) map[string]string {
		return map[string]string{PartOfLabel: PartOfValue, ComponentLabel: role, VersionLabel: "v1.2.3", InstanceLabel: "cca"}
	}
	dep := func(role string, want, ready int32) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "cca-" + role, Namespace: "agents", Labels: labels(role)},
			Spec:       appsv1.DeploymentSpec{Replicas: &want},
			Status:     appsv1.DeploymentStatus{ReadyReplicas: ready},
		}
	}
	pod := func(role string, st corev1.ContainerStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "cca-" + role + "-x", Namespace: "agents", Labels: labels(role)},
			Status:     corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{st}},
		}
	}
	cs := fake.NewClientset(
		dep("connect", 2, 2), dep("identity", 1, 0), dep("sync", 1, 1), dep("guard", 1, 0),
		pod("identity", corev1.ContainerStatus{Name: "identity",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container"}}}),
		pod("guard", corev1.ContainerStatus{Name: "guard",
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "guard: --client-cert-file: no such file\n"}}}),
		// Crashed once, ready since: no error.
		pod("connect", corev1.ContainerStatus{Name: "connect", Ready: true,
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Message: "old"}}}),
		// Not the chart's: ignored.
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "agents"}},
	)
	got, err := Agents(context.Background(), &Collector{Client: cs, Namespace: "agents"})
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, r := range got {
		roles = append(roles, r.Role)
	}
	if strings.Join(roles, ",") != "connect,guard,identity,sync" {
		t.Fatalf("roles %v, want sorted chart roles only", roles)
	}
	byRole := map[string]int{}
	for i, r := range got {
		byRole[r.Role] = i
	}
	if c := got[byRole["connect"]]; !c.Ready || c.Replicas != 2 || c.ReadyReplicas != 2 || c.Version != "v1.2.3" || c.LastError != "" {
		t.Errorf("connect: %+v", c)
	}
	if id := got[byRole["identity"]]; id.Ready || !strings.Contains(id.LastError, "CrashLoopBackOff") {
		t.Errorf("identity: %+v", id)
	}
	if g := got[byRole["guard"]]; g.Ready || !strings.Contains(g.LastError, "exited 1") || !strings.Contains(g.LastError, "no such file") {
		t.Errorf("guard: %+v", g)
	}
	long := bound(strings.Repeat("é", 600))
	if len(long) > maxLastError+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("bound: %d bytes", len(long))
	}
}
