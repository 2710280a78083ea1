package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/test/cluster"
	"github.com/clusterconnect/clusterconnect/test/kubectl"
)

// testCluster is shared by all tests of the package; started in TestMain.
var testCluster *cluster.Cluster

// withCluster runs the tests with a cluster, stopping it before goleak
// looks for leftover goroutines.
type withCluster struct{ m *testing.M }

func (w withCluster) Run() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	start := time.Now()
	c, err := cluster.Start(ctx, &cluster.Options{Logger: logger})
	if err != nil {
		fmt.Fprintf(os.Stderr, "start test cluster: %v\n", err)
		return 1
	}
	logger.Info("cluster started", "took", time.Since(start).Round(time.Millisecond))
	testCluster = c
	defer func() {
		start := time.Now()
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop test cluster: %v\n", err)
		}
		logger.Info("cluster stopped", "took", time.Since(start).Round(time.Millisecond))
	}()
	return w.m.Run()
}

func TestMain(m *testing.M) {
	// No ignores needed: client-go's connections end when the apiserver
	// stops, which happens before the check.
	goleak.VerifyTestMain(withCluster{m})
}

func TestKubectlGetNamespaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, _, err := kubectl.Run(ctx, testCluster.AdminKubeconfig, nil, nil, "get", "ns", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"namespace/default", "namespace/kube-system"} {
		if !strings.Contains(out, ns) {
			t.Errorf("kubectl get ns: want %s in output, got:\n%s", ns, out)
		}
	}
}

func TestServerVersion(t *testing.T) {
	cs, err := testCluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version: got %q, want v1.37.2", v.GitVersion)
	}
}

func TestServiceAccountToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := testCluster.CreateNamespace(ctx, "sa-test"); err != nil {
		t.Fatal(err)
	}
	for _, admin := range []bool{true, false} {
		t.Run(fmt.Sprintf("clusterAdmin=%v", admin), func(t *testing.T) {
			name := fmt.Sprintf("robot-%v", admin)
			tok, err := testCluster.ServiceAccountToken(ctx, "sa-test", name, admin)
			if err != nil {
				t.Fatal(err)
			}
			cfg := &rest.Config{Host: testCluster.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{CAData: testCluster.CAPEM}}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if admin && err != nil {
				t.Fatalf("list namespaces as cluster-admin ServiceAccount: %v", err)
			}
			if !admin && err == nil {
				t.Fatal("list namespaces as unprivileged ServiceAccount succeeded, want forbidden")
			}
			review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("SelfSubjectReview: %v", err)
			}
			if want := "system:serviceaccount:sa-test:" + name; review.Status.UserInfo.Username != want {
				t.Errorf("token user: got %q, want %q", review.Status.UserInfo.Username, want)
			}
		})
	}
}

func TestCreateNamespaceHasDefaultServiceAccount(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := testCluster.CreateNamespace(ctx, "ns-test"); err != nil {
		t.Fatal(err)
	}
	if err := testCluster.CreateNamespace(ctx, "ns-test"); err != nil {
		t.Fatalf("second CreateNamespace should tolerate existing objects: %v", err)
	}
	cs, err := testCluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("ns-test").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestAdminClientCertificate(t *testing.T) {
	cfg := &rest.Config{Host: testCluster.URL, TLSClientConfig: rest.TLSClientConfig{
		CAData: testCluster.CAPEM, CertFile: testCluster.AdminCertFile, KeyFile: testCluster.AdminKeyFile,
	}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(t.Context(), "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("get namespace with the admin client certificate: %v", err)
	}
}

func TestStartFailureReportsLogAndCleansUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := cluster.Start(ctx, &cluster.Options{
		Dir:                dir,
		BinDir:             testCluster.BinDir,
		ExtraAPIServerArgs: []string{"--no-such-flag=1"},
	})
	if err == nil {
		c.Stop()
		t.Fatal("Start with a bad apiserver flag succeeded")
	}
	for _, want := range []string{"kube-apiserver exited", "unknown flag: --no-such-flag", "kube-apiserver.log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error should mention %q, got:\n%v", want, err)
		}
	}
	t.Logf("Start error (expected):\n%v", err)
	// Everything Start started is gone: no process mentions dir any more.
	if pids := processesMentioning(t, dir); len(pids) > 0 {
		t.Errorf("processes still running after the failed Start: %v", pids)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "etcd.log")); statErr != nil {
		t.Errorf("etcd.log missing (Dir given by the caller must be kept): %v", statErr)
	}
}

// processesMentioning returns the command lines of processes whose
// arguments contain s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}
