package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/test/cluster"
)

// etcdEnv is a real three-member etcd cluster with TLS, started on first
// use (the bolt tests do not pay for it) and stopped by TestMain.
var etcdEnv struct {
	once sync.Once
	e    *cluster.Etcd
	dir  string
	err  error
	n    atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdEnv.e != nil {
		etcdEnv.e.Stop()
	}
	if etcdEnv.dir != "" && code == 0 {
		os.RemoveAll(etcdEnv.dir)
	}
	os.Exit(code)
}

func sharedEtcd(t *testing.T) *cluster.Etcd {
	t.Helper()
	etcdEnv.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if etcdEnv.dir, etcdEnv.err = os.MkdirTemp("", "clusterconnect-store-etcd-"); etcdEnv.err != nil {
			return
		}
		etcdEnv.e, etcdEnv.err = cluster.StartEtcd(ctx, cluster.EtcdOptions{Members: 3, Dir: etcdEnv.dir})
	})
	if etcdEnv.err != nil {
		t.Fatalf("etcd: %v (logs in %s)", etcdEnv.err, etcdEnv.dir)
	}
	return etcdEnv.e
}

func openEtcdAt(t *testing.T, e *cluster.Etcd, prefix string, endpoints ...string) *Etcd {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = e.Endpoints
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := OpenEtcd(ctx, EtcdConfig{Endpoints: endpoints, CertFile: e.ClientCert, KeyFile: e.ClientKey, CAFile: e.CAFile, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEtcdConformance(t *testing.T) {
	e := sharedEtcd(t)
	conformance(t, fixture{
		open: func(t *testing.T) Store {
			return openEtcdAt(t, e, fmt.Sprintf("/conformance-%d/", etcdEnv.n.Add(1)))
		},
		reopen: func(t *testing.T, s Store) Store {
			prefix := s.(*Etcd).prefix
			s.Close()
			return openEtcdAt(t, e, prefix)
		},
		second: func(t *testing.T, s Store) Store {
			// Another replica, through another member first.
			eps := append([]string(nil), e.Endpoints...)
			eps[0], eps[len(eps)-1] = eps[len(eps)-1], eps[0]
			return openEtcdAt(t, e, s.(*Etcd).prefix, eps...)
		},
		leftover: func(t *testing.T, s Store, a *RoleAssignment) {
			es := s.(*Etcd)
			v := fmt.Sprintf(`{"id":%q,"role":%q,"cluster":%q}`, a.ID, a.Role, a.Cluster)
			if _, err := es.cli.Put(context.Background(), es.key(KindAssignment, a.ID), v); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestEtcdMembersDown: with one of three members down nothing fails; with
// two down, reads and writes fail with ErrUnavailable and a message that
// says what is wrong, and nothing is lost; when a member returns, the
// store works again. The killed members are restarted on their data.
func TestEtcdMembersDown(t *testing.T) {
	e := sharedEtcd(t)
	s := openEtcdAt(t, e, fmt.Sprintf("/members-%d/", etcdEnv.n.Add(1)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.CreateCluster(ctx, &Cluster{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	restart := func(i int) {
		if err := e.Restart(ctx, i); err != nil {
			t.Fatalf("restart member %d: %v", i, err)
		}
	}
	e.Kill(0)
	defer func() {
		// Leave the shared cluster whole for the other tests.
		for i := range 3 {
			if err := e.WaitHealthy(ctx, i); err != nil && strings.Contains(err.Error(), "exit") {
				restart(i)
			}
		}
	}()
	for i := range 20 {
		if _, err := s.UpdateCluster(ctx, "before", func(c *Cluster) error { c.CertGeneration++; return nil }); err != nil {
			t.Fatalf("update %d with one member down: %v", i, err)
		}
	}
	if err := s.CreateCluster(ctx, &Cluster{Name: "one-down"}); err != nil {
		t.Fatalf("create with one member down: %v", err)
	}
	e.Kill(1)
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	err := s.CreateCluster(short, &Cluster{Name: "two-down"})
	cancelShort()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "majority of the etcd members") {
		t.Fatalf("create with two of three members down = %v, want ErrUnavailable saying why", err)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping without quorum = %v", err)
	}
	restart(0)
	for ctx.Err() == nil {
		if err = s.Ping(ctx); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no recovery after a member returned: %v", err)
	}
	got, err := s.GetCluster(ctx, "before")
	if err != nil || got.CertGeneration != 20 {
		t.Fatalf("after recovery: %+v, %v; want every acknowledged update", got, err)
	}
	if _, err := s.GetCluster(ctx, "two-down"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused create left %v", err)
	}
	restart(1)
}

// A relay stopped between the chunks of a large cluster's delete leaves
// assignments that name no cluster; deleting the cluster again (not found)
// removes them, and no one else's.
func TestEtcdDeleteAgainRemovesLeftovers(t *testing.T) {
	e := sharedEtcd(t)
	s := openEtcdAt(t, e, fmt.Sprintf("/leftovers-%d/", etcdEnv.n.Add(1)))
	ctx := context.Background()
	if err := s.CreateCluster(ctx, &Cluster{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "keep", Role: "Viewer", Cluster: "other"}); err != nil {
		t.Fatal(err)
	}
	for i := range 2*txnBudget + 10 {
		v := fmt.Sprintf(`{"id":"old-%03d","role":"Viewer","cluster":"gone"}`, i)
		if _, err := s.cli.Put(ctx, s.key(KindAssignment, fmt.Sprintf("old-%03d", i)), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteCluster(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a deleted cluster = %v, want ErrNotFound", err)
	}
	if as, err := s.ListAssignments(ctx, ""); err != nil || len(as) != 1 || as[0].ID != "keep" {
		t.Fatalf("assignments after the retried delete: %d, %v; want keep only", len(as), err)
	}
}

// Replicas sweeping at once delete every expired assignment, and each
// reports only those it deleted.
func TestEtcdConcurrentSweeps(t *testing.T) {
	e := sharedEtcd(t)
	s := openEtcdAt(t, e, fmt.Sprintf("/sweeps-%d/", etcdEnv.n.Add(1)))
	other := openEtcdAt(t, e, s.prefix)
	ctx := context.Background()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	want := manyIDs()
	inParallel(t, many, func(i int) error {
		return s.CreateAssignment(ctx, &RoleAssignment{ID: want[i], Role: "Reader", ExpiresAt: now})
	})
	var wg sync.WaitGroup
	var gone [2][]*RoleAssignment
	var errs [2]error
	for i, h := range []*Etcd{s, other} {
		wg.Go(func() { gone[i], errs[i] = h.DeleteExpiredAssignments(ctx, now) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if got := ids(append(gone[0], gone[1]...)); !slices.Equal(got, want) {
		t.Logf("one sweep took %d, the other %d", len(gone[0]), len(gone[1]))
		// What a sweep left (a chunk that lost to the other) goes next time.
		rest, err := s.DeleteExpiredAssignments(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(append(append(gone[0], gone[1]...), rest...)); !slices.Equal(got, want) {
			t.Fatalf("the sweeps returned %d assignments (duplicates or misses), want each of %d once", len(got), many)
		}
	}
	if as, _ := s.ListAssignments(ctx, ""); len(as) != 0 {
		t.Fatalf("%d expired assignments left", len(as))
	}
}
