package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// fixture is one store implementation under the conformance suite.
type fixture struct {
	// open returns an empty store of its own (closed when t ends).
	open func(t *testing.T) Store
	// reopen closes s and opens the same state again (a restart).
	reopen func(t *testing.T, s Store) Store
	// second opens another handle on s's state (another relay replica);
	// nil for a store only one process may open.
	second func(t *testing.T, s Store) Store
	// leftover writes an assignment behind the store's back, as an older
	// relay could leave one.
	leftover func(t *testing.T, s Store, a *RoleAssignment)
}

// conformance runs every test of the Store contract on f.
func conformance(t *testing.T, f fixture) {
	for name, test := range map[string]func(*testing.T, fixture){
		"Clusters":                        testClusters,
		"DeleteClusterDeletesAssignments": testDeleteClusterDeletesItsAssignments,
		"AssignmentNeedsItsCluster":       testAssignmentNeedsItsCluster,
		"AssignmentsExpire":               testAssignmentsExpire,
		"Tokens":                          testTokens,
		"ConcurrentUpdates":               testConcurrentUpdates,
		"LargeLists":                      testLargeLists,
		"ManyAssignmentsOfACluster":       testManyAssignmentsOfACluster,
		"ManyLeftovers":                   testManyLeftovers,
		"ManyExpiredAssignments":          testManyExpiredAssignments,
		"ManyExpiredTokens":               testManyExpiredTokens,
		"Watch":                           testWatch,
	} {
		t.Run(name, func(t *testing.T) { test(t, f) })
	}
}

func testClusters(t *testing.T, f fixture) {
	s := f.open(t)
	ctx := context.Background()
	c := &Cluster{Name: "prod-eu", UID: "u1", CreatedAt: time.Unix(1700000000, 0).UTC(), RegistrationTokenHash: "abc"}
	if err := s.CreateCluster(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCluster(ctx, c); !errors.Is(err, ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}

	// State survives a restart.
	s = f.reopen(t, s)
	got, err := s.GetCluster(ctx, "prod-eu")
	if err != nil || got.UID != c.UID || got.RegistrationTokenHash != "abc" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Fatalf("get after reopen = %+v, %v; want %+v", got, err, c)
	}
	list, err := s.ListClusters(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %v, %v", list, err)
	}
	// Updates are read-modify-write; an error aborts.
	if u, err := s.UpdateCluster(ctx, "prod-eu", func(c *Cluster) error { c.RegistrationTokenUsed = true; return nil }); err != nil || u.Version != got.Version+1 {
		t.Fatalf("update = %+v, %v; want the version (etag) moved on from %d", u, err, got.Version)
	}
	if _, err := s.UpdateCluster(ctx, "prod-eu", func(c *Cluster) error { c.CertGeneration = 9; return errors.New("no") }); err == nil {
		t.Fatal("update error not returned")
	}
	if got, _ := s.GetCluster(ctx, "prod-eu"); !got.RegistrationTokenUsed || got.CertGeneration != 0 {
		t.Fatalf("after updates: %+v", got)
	}
	if _, err := s.UpdateCluster(ctx, "nope", func(*Cluster) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a missing cluster = %v", err)
	}
	// The CA is stored once; later InitCA calls return the first.
	first, err := s.InitCA(ctx, &CA{CertPEM: []byte("c1"), KeyPEM: []byte("k1")})
	if err != nil || string(first.CertPEM) != "c1" {
		t.Fatal(first, err)
	}
	if again, _ := s.InitCA(ctx, &CA{CertPEM: []byte("c2")}); string(again.CertPEM) != "c1" {
		t.Fatalf("InitCA replaced the CA: %s", again.CertPEM)
	}
	if err := s.DeleteCluster(ctx, "prod-eu"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCluster(ctx, "prod-eu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteCluster(ctx, "prod-eu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
}

func ids(as []*RoleAssignment) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	slices.Sort(out)
	return out
}

// A deleted cluster's assignments go with it, in the same transaction: a
// cluster registered again under the name starts with none.
func testDeleteClusterDeletesItsAssignments(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	for _, name := range []string{"prod-eu", "prod-us"} {
		if err := s.CreateCluster(ctx, &Cluster{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []*RoleAssignment{
		{ID: "a1", Role: "Viewer", PrincipalID: "u1", PrincipalType: "User", Cluster: "prod-eu"},
		{ID: "a2", Role: "Admin", PrincipalID: "g1", PrincipalType: "Group", Cluster: "prod-eu", Namespace: "team-a"},
		{ID: "a3", Role: "Viewer", PrincipalID: "u1", PrincipalType: "User", Cluster: "prod-us"},
		{ID: "a4", Role: "Owner", PrincipalID: "u1", PrincipalType: "User"},
	} {
		if err := s.CreateAssignment(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteCluster(ctx, "prod-eu"); err != nil {
		t.Fatal(err)
	}
	if as, err := s.ListAssignments(ctx, "prod-eu"); err != nil || len(as) != 0 {
		t.Fatalf("assignments of the deleted cluster: %v, %v", ids(as), err)
	}
	if err := s.CreateCluster(ctx, &Cluster{Name: "prod-eu"}); err != nil {
		t.Fatal(err)
	}
	if as, _ := s.ListAssignments(ctx, "prod-eu"); len(as) != 0 {
		t.Fatalf("the re-created cluster inherited %v", ids(as))
	}
	if as, _ := s.ListAssignments(ctx, ""); !slices.Equal(ids(as), []string{"a3", "a4"}) {
		t.Fatalf("other assignments = %v, want a3 (other cluster) and a4 (relay scope)", ids(as))
	}
}

// Assignments name registered clusters only, checked in the transaction
// that stores them; leftovers of older versions do not pass to a new
// cluster of the same name.
func testAssignmentNeedsItsCluster(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "a1", Role: "Viewer", Cluster: "gone"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("assignment on a missing cluster = %v, want ErrNotFound", err)
	}
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "a2", Role: "Reader"}); err != nil {
		t.Fatalf("relay-scope assignment: %v", err)
	}
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "a2", Role: "Owner"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second assignment with ID a2 = %v, want ErrExists", err)
	}
	// A leftover, as an older relay could leave one behind.
	f.leftover(t, s, &RoleAssignment{ID: "old", Role: "Cluster Admin", Cluster: "gone"})
	if err := s.CreateCluster(ctx, &Cluster{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if as, _ := s.ListAssignments(ctx, "gone"); len(as) != 0 {
		t.Fatalf("new cluster inherited %v", ids(as))
	}
	if a, _ := s.ListAssignments(ctx, ""); !slices.Equal(ids(a), []string{"a2"}) {
		t.Fatalf("assignments = %v", ids(a))
	}
}

func testAssignmentsExpire(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.CreateCluster(ctx, &Cluster{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	want := &RoleAssignment{ID: "past", Role: "Viewer", PrincipalID: "u", PrincipalType: "User", Cluster: "c",
		CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Second), CreatedBy: "user:boss"}
	for _, a := range []*RoleAssignment{
		want,
		{ID: "now", Role: "Viewer", Cluster: "c", ExpiresAt: now},                    // not after now: expired
		{ID: "later", Role: "Viewer", Cluster: "c", ExpiresAt: now.Add(time.Second)}, // still good
		{ID: "never", Role: "Owner"},
	} {
		if err := s.CreateAssignment(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := s.DeleteExpiredAssignments(ctx, now)
	if err != nil || !slices.Equal(ids(gone), []string{"now", "past"}) {
		t.Fatalf("DeleteExpiredAssignments = %v, %v; want now and past", ids(gone), err)
	}
	for _, g := range gone {
		if g.ID == "past" && (!g.ExpiresAt.Equal(want.ExpiresAt) || g.CreatedBy != want.CreatedBy || !g.CreatedAt.Equal(want.CreatedAt)) {
			t.Errorf("returned %+v, want %+v", g, want)
		}
	}
	if as, _ := s.ListAssignments(ctx, ""); !slices.Equal(ids(as), []string{"later", "never"}) {
		t.Fatalf("left = %v", ids(as))
	}
	if gone, err := s.DeleteExpiredAssignments(ctx, now); err != nil || len(gone) != 0 {
		t.Fatalf("second sweep = %v, %v", ids(gone), err)
	}
}

func testTokens(t *testing.T, f fixture) {
	s := f.open(t)
	ctx := context.Background()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := &APIToken{ID: "t1", Name: "ci", Role: "Contributor", Hash: "ab12", CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "admin"}
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, &APIToken{ID: "t1", Role: "Owner"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second t1 = %v, want ErrExists", err)
	}
	s = f.reopen(t, s)
	got, err := s.GetToken(ctx, "t1")
	if err != nil || got.Name != "ci" || got.Role != "Contributor" || got.Hash != "ab12" || got.CreatedBy != "admin" ||
		!got.CreatedAt.Equal(tok.CreatedAt) || !got.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Fatalf("GetToken after reopen = %+v, %v; want %+v", got, err, tok)
	}
	if _, err := s.GetToken(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetToken(nope) = %v", err)
	}
	for _, x := range []*APIToken{
		{ID: "t2", ExpiresAt: now}, // not after now: expired
		{ID: "t3"},                 // no expiry: counts as expired
		{ID: "t4", ExpiresAt: now.Add(time.Second)}, // good
	} {
		if err := s.CreateToken(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	tokIDs := func() []string {
		l, err := s.ListTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range l {
			out = append(out, x.ID)
		}
		slices.Sort(out)
		return out
	}
	if l := tokIDs(); !slices.Equal(l, []string{"t1", "t2", "t3", "t4"}) {
		t.Fatalf("ListTokens = %v", l)
	}
	if n, err := s.DeleteExpiredTokens(ctx, now); err != nil || n != 2 {
		t.Fatalf("DeleteExpiredTokens = %d, %v; want 2", n, err)
	}
	if l := tokIDs(); !slices.Equal(l, []string{"t1", "t4"}) {
		t.Fatalf("after the sweep: %v", l)
	}
	if err := s.DeleteToken(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken(ctx, "t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteToken = %v", err)
	}
	if l := tokIDs(); !slices.Equal(l, []string{"t4"}) {
		t.Fatalf("after delete: %v", l)
	}
}

func TestExpired(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		at            time.Time
		assign, token bool
	}{
		{time.Time{}, false, true},
		{now.Add(-time.Nanosecond), true, true},
		{now, true, true},
		{now.Add(time.Nanosecond), false, false},
	} {
		if got := (&RoleAssignment{ExpiresAt: tc.at}).Expired(now); got != tc.assign {
			t.Errorf("assignment expiring %v: Expired = %v", tc.at, got)
		}
		if got := (&APIToken{ExpiresAt: tc.at}).Expired(now); got != tc.token {
			t.Errorf("token expiring %v: Expired = %v", tc.at, got)
		}
	}
}

// Read-modify-write updates from several goroutines (and, where the store
// allows it, several handles: relay replicas) lose none.
func testConcurrentUpdates(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	if err := s.CreateCluster(ctx, &Cluster{Name: "busy"}); err != nil {
		t.Fatal(err)
	}
	handles := []Store{s}
	if f.second != nil {
		handles = append(handles, f.second(t, s))
	}
	const workers, each = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		h := handles[w%len(handles)]
		wg.Go(func() {
			for range each {
				if _, err := h.UpdateCluster(ctx, "busy", func(c *Cluster) error { c.CertGeneration++; return nil }); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.GetCluster(ctx, "busy")
	if err != nil || got.CertGeneration != workers*each || got.Version != 1+workers*each {
		t.Fatalf("after %d updates: %+v, %v", workers*each, got, err)
	}
	// An update whose function fails writes nothing, and a concurrent
	// delete wins over a later update.
	if err := handles[len(handles)-1].DeleteCluster(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateCluster(ctx, "busy", func(*Cluster) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update after a delete elsewhere = %v", err)
	}
}

func testLargeLists(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	const n = 1200
	for i := range n {
		if err := s.CreateCluster(ctx, &Cluster{Name: fmt.Sprintf("c-%04d", i), UID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListClusters(ctx)
	if err != nil || len(list) != n {
		t.Fatalf("ListClusters = %d, %v; want %d", len(list), err, n)
	}
	seen := map[string]bool{}
	for _, c := range list {
		seen[c.Name] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct names", len(seen))
	}
}

// testWatch: a store shared by replicas tells each what the others change.
func testWatch(t *testing.T, f fixture) {
	s := f.open(t)
	w, ok := s.(Watcher)
	if !ok || f.second == nil {
		t.Skip("a store of one process: no watch")
	}
	other := f.second(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	changes := make(chan Change, 64)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Watch(wctx, func(c Change) { changes <- c })
	}()
	defer func() { stop(); <-done }()
	// The watch starts asynchronously: write until the first change shows.
	want := func(match func(Change) bool, what string) Change {
		t.Helper()
		for {
			select {
			case c := <-changes:
				if match(c) {
					return c
				}
			case <-ctx.Done():
				t.Fatalf("no change: %s", what)
			}
		}
	}
	for i := 0; ; i++ {
		if err := other.CreateCluster(ctx, &Cluster{Name: fmt.Sprintf("w-%d", i), UID: "u1"}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-changes:
			if c.Kind != KindCluster || c.Deleted {
				t.Fatalf("first change %+v", c)
			}
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	if _, err := other.UpdateCluster(ctx, "w-0", func(c *Cluster) error { c.UID = "u2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if c := want(func(c Change) bool { return c.Kind == KindCluster && c.Name == "w-0" }, "re-registration"); !c.Replaced {
		t.Errorf("a new UID is not Replaced: %+v", c)
	}
	if err := other.CreateAssignment(ctx, &RoleAssignment{ID: "wa", Role: "Viewer", Cluster: "w-0"}); err != nil {
		t.Fatal(err)
	}
	want(func(c Change) bool { return c.Kind == KindAssignment && c.Name == "wa" && !c.Deleted }, "assignment created")
	if err := other.DeleteCluster(ctx, "w-0"); err != nil {
		t.Fatal(err)
	}
	// One transaction deletes both: the events come in either order.
	var clusterGone, assignmentGone bool
	for !clusterGone || !assignmentGone {
		c := want(func(c Change) bool { return c.Deleted }, "cluster and its assignment deleted")
		clusterGone = clusterGone || c.Kind == KindCluster && c.Name == "w-0"
		assignmentGone = assignmentGone || c.Kind == KindAssignment && c.Name == "wa"
	}
	if err := other.CreateToken(ctx, &APIToken{ID: "wt"}); err != nil {
		t.Fatal(err)
	}
	want(func(c Change) bool { return c.Kind == KindToken && c.Name == "wt" }, "token created")
}

// many is more records than one etcd transaction may touch (128 operations
// by default), so that the stores must split the work.
const many = 300

// inParallel runs do(0) … do(n-1) on a few goroutines and fails t on the
// first error.
func inParallel(t *testing.T, n int, do func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := do(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A cluster with more assignments than one transaction holds is deleted
// with all of them, and a cluster registered again under its name starts
// with none; others' assignments stay.
func testManyAssignmentsOfACluster(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	for _, name := range []string{"big", "other"} {
		if err := s.CreateCluster(ctx, &Cluster{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	inParallel(t, many, func(i int) error {
		return s.CreateAssignment(ctx, &RoleAssignment{ID: fmt.Sprintf("big-%03d", i), Role: "Viewer", PrincipalID: fmt.Sprint("u", i), PrincipalType: "User", Cluster: "big"})
	})
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "keep", Role: "Viewer", Cluster: "other"}); err != nil {
		t.Fatal(err)
	}
	if as, err := s.ListAssignments(ctx, "big"); err != nil || len(as) != many {
		t.Fatalf("ListAssignments(big) = %d, %v; want %d", len(as), err, many)
	}
	if err := s.DeleteCluster(ctx, "big"); err != nil {
		t.Fatalf("delete a cluster with %d assignments: %v", many, err)
	}
	if _, err := s.GetCluster(ctx, "big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete = %v, want ErrNotFound", err)
	}
	if as, err := s.ListAssignments(ctx, "big"); err != nil || len(as) != 0 {
		t.Fatalf("%d assignments of the deleted cluster left (%v)", len(as), err)
	}
	if err := s.CreateCluster(ctx, &Cluster{Name: "big"}); err != nil {
		t.Fatal(err)
	}
	if as, _ := s.ListAssignments(ctx, "big"); len(as) != 0 {
		t.Fatalf("the re-created cluster inherited %d assignments", len(as))
	}
	if as, _ := s.ListAssignments(ctx, ""); !slices.Equal(ids(as), []string{"keep"}) {
		t.Fatalf("assignments = %v, want keep (another cluster's)", ids(as))
	}
}

// More leftover assignments under a name than one transaction holds (what
// a relay stopped halfway through deleting a large cluster, or an older
// version, leaves) are all gone before a cluster of that name exists.
func testManyLeftovers(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	for i := range many {
		f.leftover(t, s, &RoleAssignment{ID: fmt.Sprintf("old-%03d", i), Role: "Cluster Admin", Cluster: "reborn"})
	}
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "relay", Role: "Reader"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCluster(ctx, &Cluster{Name: "reborn"}); err != nil {
		t.Fatalf("create over %d leftovers: %v", many, err)
	}
	if as, _ := s.ListAssignments(ctx, "reborn"); len(as) != 0 {
		t.Fatalf("the new cluster inherited %d leftovers", len(as))
	}
	if as, _ := s.ListAssignments(ctx, ""); !slices.Equal(ids(as), []string{"relay"}) {
		t.Fatalf("assignments = %v, want relay", ids(as))
	}
	if err := s.CreateCluster(ctx, &Cluster{Name: "reborn"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}
}

// manyIDs are many sorted IDs.
func manyIDs() []string {
	var out []string
	for i := range many {
		out = append(out, fmt.Sprintf("x-%03d", i))
	}
	return out
}

// A sweep deletes and returns every expired assignment, however many there
// are.
func testManyExpiredAssignments(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.CreateCluster(ctx, &Cluster{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	want := manyIDs()
	inParallel(t, many, func(i int) error {
		cluster := "c"
		if i%3 == 0 {
			cluster = "" // relay scope
		}
		return s.CreateAssignment(ctx, &RoleAssignment{ID: want[i], Role: "Viewer", Cluster: cluster, ExpiresAt: now.Add(-time.Minute)})
	})
	if err := s.CreateAssignment(ctx, &RoleAssignment{ID: "later", Role: "Viewer", Cluster: "c", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	gone, err := s.DeleteExpiredAssignments(ctx, now)
	if err != nil || !slices.Equal(ids(gone), want) {
		t.Fatalf("DeleteExpiredAssignments = %d assignments, %v; want the %d expired", len(gone), err, many)
	}
	if as, _ := s.ListAssignments(ctx, ""); !slices.Equal(ids(as), []string{"later"}) {
		t.Fatalf("left = %d assignments, want later only", len(as))
	}
	if gone, err := s.DeleteExpiredAssignments(ctx, now); err != nil || len(gone) != 0 {
		t.Fatalf("second sweep = %d, %v", len(gone), err)
	}
}

// A sweep deletes every expired token, however many there are.
func testManyExpiredTokens(t *testing.T, f fixture) {
	s, ctx := f.open(t), context.Background()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	want := manyIDs()
	inParallel(t, many, func(i int) error {
		return s.CreateToken(ctx, &APIToken{ID: want[i], Role: "Reader", ExpiresAt: now.Add(-time.Minute)})
	})
	if err := s.CreateToken(ctx, &APIToken{ID: "later", Role: "Reader", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteExpiredTokens(ctx, now); err != nil || n != many {
		t.Fatalf("DeleteExpiredTokens = %d, %v; want %d", n, err, many)
	}
	if l, _ := s.ListTokens(ctx); len(l) != 1 || l[0].ID != "later" {
		t.Fatalf("left = %d tokens, want later only", len(l))
	}
}
