package kubelet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// RegisterNode creates (or updates) Node name and sets its status through
// the status subresource: Ready, InternalIP 127.0.0.1 and
// daemonEndpoints.kubeletEndpoint.Port = k.Port, so the apiserver sends
// the node's exec/attach/port-forward/log requests to this kubelet (with
// --kubelet-preferred-address-types=InternalIP).
func (k *Kubelet) RegisterNode(ctx context.Context, cs kubernetes.Interface, name string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
	}}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("create Node %q: %w", name, err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "KubeletReady", Message: "test kubelet is posting ready status",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.Port)}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          "v1.37.2",
			OperatingSystem:         "linux",
			Architecture:            "amd64",
			ContainerRuntimeVersion: "test://0.0.0",
		},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of Node %q: %w", name, err)
	}
	k.logger.Info("registered node", "node", name, "kubeletPort", k.Port)
	return nil
}

// RunPod creates Pod namespace/name with one container (image "test",
// stdin enabled) bound to node, and sets its status through the status
// subresource to Running with a running, ready container and pod IP
// 127.0.0.1 (kubectl port-forward refuses pods that are not Running). The
// namespace needs its "default" ServiceAccount first (there is no
// controller-manager; see cluster.CreateNamespace).
func RunPod(ctx context.Context, cs kubernetes.Interface, namespace, name, node, container string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name:  container,
				Image: "test",
				Stdin: true,
			}},
		},
	}
	created, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		hint := ""
		if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
			hint = " (does the namespace exist with its \"default\" ServiceAccount? see cluster.CreateNamespace)"
		}
		return fmt.Errorf("create Pod %s/%s%s: %w", namespace, name, hint, err)
	}
	now := metav1.Now()
	ready := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	started := true
	created.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: ready,
		HostIP:     "127.0.0.1",
		HostIPs:    []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:      "127.0.0.1",
		PodIPs:     []corev1.PodIP{{IP: "127.0.0.1"}},
		StartTime:  &now,
		QOSClass:   corev1.PodQOSBestEffort,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:         container,
			Ready:        true,
			Started:      &started,
			Image:        "test",
			ImageID:      "test://test",
			ContainerID:  "test://" + namespace + "_" + name + "_" + container,
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			RestartCount: 0,
		}},
	}
	if _, err := cs.CoreV1().Pods(namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set status of Pod %s/%s to Running: %w", namespace, name, err)
	}
	return nil
}
