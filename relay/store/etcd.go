package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clusterconnect/clusterconnect/pkg/trust"
)

// ErrUnavailable wraps the errors of a store that cannot be reached (etcd
// without quorum, or unreachable): writes are refused, nothing is lost.
var ErrUnavailable = errors.New("store unavailable")

// DefaultEtcdPrefix is where the relay keeps its keys in etcd.
const DefaultEtcdPrefix = "/clusterconnect/"

// etcdOpTimeout bounds one store call (its context's deadline may be
// sooner): without quorum the client would wait, and callers should get
// ErrUnavailable instead of a hung request.
const etcdOpTimeout = 5 * time.Second

// EtcdConfig is how to reach the etcd cluster a fleet of relays shares.
type EtcdConfig struct {
	Endpoints []string
	// CertFile, KeyFile: the relay's client certificate; CAFile: the CA of
	// the etcd members' serving certificates. All empty: plain http (tests
	// and loopback only).
	CertFile, KeyFile, CAFile string
	// Prefix of every key; empty means DefaultEtcdPrefix.
	Prefix      string
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Etcd is the Store of a fleet of relays: every replica reads and writes
// the same keys, with etcd transactions (compare on revisions) where the
// embedded store has its file lock, and follows the others' changes with
// Watch.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
}

var _ Watcher = (*Etcd)(nil)

// OpenEtcd connects to etcd and checks that it answers.
func OpenEtcd(ctx context.Context, cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints (--etcd-endpoints)")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cc := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		AutoSyncInterval:     time.Minute,
		Logger:               zap.NewNop(),
		Context:              context.WithoutCancel(ctx),
	}
	if cfg.CertFile != "" || cfg.CAFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := trust.Pool(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("etcd store: --etcd-ca: %w", err)
			}
			tc.RootCAs = pool
		}
		if cfg.CertFile != "" {
			pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("etcd store: --etcd-cert/--etcd-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd store %v: %w", cfg.Endpoints, err)
	}
	s := &Etcd{cli: cli, prefix: cfg.Prefix, log: log}
	if err := s.Ping(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	return s, nil
}

// Ping reads one key with a linearizable read: it fails when the cluster
// has no quorum (readiness uses it).
func (s *Etcd) Ping(ctx context.Context) error {
	ctx, cancel := opContext(ctx)
	defer cancel()
	if _, err := s.cli.Get(ctx, s.prefix+"meta/ping"); err != nil {
		return s.wrap("read", err)
	}
	return nil
}

func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, etcdOpTimeout)
}

// wrap turns etcd's transport errors into ErrUnavailable with what to do.
func (s *Etcd) wrap(op string, err error) error {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) {
		return err
	}
	// No quorum, no leader, members unreachable: etcd's own timeouts and
	// gRPC's Unavailable, or the deadline of opContext.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrTimeout) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) ||
		status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("%w: etcd %s failed (is a majority of the etcd members up and reachable?): %v", ErrUnavailable, op, err)
	}
	return fmt.Errorf("etcd %s: %w", op, err)
}

func (s *Etcd) key(kind, name string) string { return s.prefix + kind + "/" + name }

// Key kinds, also the Change kinds.
const (
	KindCluster    = "clusters"
	KindRole       = "roles"
	KindAssignment = "assignments"
	KindToken      = "tokens"
	kindMeta       = "meta"
)

func (s *Etcd) getJSON(ctx context.Context, kind, name, what string, v any) (int64, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, s.key(kind, name))
	if err != nil {
		return 0, s.wrap("read", err)
	}
	if len(r.Kvs) == 0 {
		return 0, fmt.Errorf("%s %q: %w", what, name, ErrNotFound)
	}
	return r.Kvs[0].ModRevision, json.Unmarshal(r.Kvs[0].Value, v)
}

// etcdGet reads one value of kind (ErrNotFound when there is none).
func etcdGet[T any](ctx context.Context, s *Etcd, kind, name, what string) (*T, error) {
	v := new(T)
	if _, err := s.getJSON(ctx, kind, name, what, v); err != nil {
		return nil, err
	}
	return v, nil
}

// assignmentsOf lists cluster's role assignments, and the revision they
// were read at.
func (s *Etcd) assignmentsOf(ctx context.Context, cluster string) ([]listed[RoleAssignment], int64, error) {
	return etcdListKeys(ctx, s, KindAssignment, func(a *RoleAssignment) bool { return a.Cluster == cluster })
}

// listed is a value as read, with its key and the revision it was last
// changed at.
type listed[T any] struct {
	v   *T
	key string
	mod int64
}

// etcdList reads every value of kind, and the revision it was read at.
func etcdList[T any](ctx context.Context, s *Etcd, kind string, keep func(*T) bool) ([]*T, int64, error) {
	ls, rev, err := etcdListKeys(ctx, s, kind, keep)
	out := make([]*T, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.v)
	}
	return out, rev, err
}

// etcdListKeys is etcdList with each value's key and revision.
func etcdListKeys[T any](ctx context.Context, s *Etcd, kind string, keep func(*T) bool) ([]listed[T], int64, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, s.prefix+kind+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.wrap("list", err)
	}
	var out []listed[T]
	for _, kv := range r.Kvs {
		v := new(T)
		if err := json.Unmarshal(kv.Value, v); err != nil {
			return nil, 0, fmt.Errorf("etcd key %s: %w", kv.Key, err)
		}
		if keep == nil || keep(v) {
			out = append(out, listed[T]{v: v, key: string(kv.Key), mod: kv.ModRevision})
		}
	}
	return out, r.Header.Revision, nil
}

// txn commits ops if cmps hold; false means they did not (retry).
func (s *Etcd) txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, s.wrap("write", err)
	}
	return r.Succeeded, nil
}

// unchangedSince holds while no key of kind changed after rev (none was
// created, updated or deleted... deletions are caught by the caller's own
// compares on the keys it read).
func (s *Etcd) unchangedSince(kind string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(s.prefix+kind+"/").WithPrefix(), "<", rev+1)
}

func deleteOps[T any](ls []listed[T]) []clientv3.Op {
	var ops []clientv3.Op
	for _, l := range ls {
		ops = append(ops, clientv3.OpDelete(l.key))
	}
	return ops
}

// txnBudget bounds the compares, and the operations, of one transaction
// the store sends: etcd refuses a transaction with more than --max-txn-ops
// of either (128 by default), so work on more keys than this goes in
// chunks (etcdDeleteChunked). Below 128 to leave room for the few compares
// and operations a transaction adds to its chunk.
const txnBudget = 100

// etcdDeleteChunked deletes the keys of ls, in transactions of at most
// txnBudget compares and operations: each key only if it did not change
// since it was read, each transaction only if guard holds too. It returns
// the values it deleted; a transaction whose compares failed (another
// replica deleted or changed one of its keys, or guard no longer holds)
// deletes nothing and the next one goes on. The transactions are not one:
// callers order their work so that a stop between two leaves a safe state.
func etcdDeleteChunked[T any](ctx context.Context, s *Etcd, ls []listed[T], guard ...clientv3.Cmp) ([]*T, error) {
	var gone []*T
	for chunk := range slices.Chunk(ls, txnBudget-len(guard)) {
		cmps := slices.Clip(guard)
		for _, l := range chunk {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(l.key), "=", l.mod))
		}
		ok, err := s.txn(ctx, cmps, deleteOps(chunk)...)
		if err != nil {
			return gone, err
		}
		if ok {
			for _, l := range chunk {
				gone = append(gone, l.v)
			}
		}
	}
	return gone, nil
}

// absent holds while no cluster of the name exists.
func (s *Etcd) absent(name string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.key(KindCluster, name)), "=", 0)
}

// maxRetries bounds optimistic-concurrency retries of one call.
const maxRetries = 20

func (s *Etcd) CreateCluster(ctx context.Context, c *Cluster) error {
	c.Version = 1
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	for range maxRetries {
		stale, rev, err := s.assignmentsOf(ctx, c.Name)
		if err != nil {
			return err
		}
		if len(stale) < txnBudget {
			// The stale assignments go in the transaction that creates
			// the cluster: it never exists with one.
			ok, err := s.txn(ctx, []clientv3.Cmp{s.absent(c.Name), s.unchangedSince(KindAssignment, rev)},
				append(deleteOps(stale), clientv3.OpPut(s.key(KindCluster, c.Name), string(v)))...)
			if err != nil || ok {
				return err
			}
		} else {
			// Too many for one transaction (a relay stopped while it
			// deleted a large cluster leaves them): delete them in chunks,
			// each only while no cluster of the name exists, and create
			// the cluster in the next round, with whatever is left, as
			// above. A stop in between leaves fewer leftovers and no
			// cluster.
			if _, err := etcdDeleteChunked(ctx, s, stale, s.absent(c.Name)); err != nil {
				return err
			}
		}
		var cur Cluster
		if _, err := s.getJSON(ctx, KindCluster, c.Name, "cluster", &cur); err == nil {
			return fmt.Errorf("cluster %q: %w", c.Name, ErrExists)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return fmt.Errorf("create cluster %q: too many concurrent changes; retry", c.Name)
}

func (s *Etcd) GetCluster(ctx context.Context, name string) (*Cluster, error) {
	return etcdGet[Cluster](ctx, s, KindCluster, name, "cluster")
}

func (s *Etcd) ListClusters(ctx context.Context) ([]*Cluster, error) {
	out, _, err := etcdList[Cluster](ctx, s, KindCluster, nil)
	return out, err
}

func (s *Etcd) UpdateCluster(ctx context.Context, name string, update func(*Cluster) error) (*Cluster, error) {
	for range maxRetries {
		var c Cluster
		rev, err := s.getJSON(ctx, KindCluster, name, "cluster", &c)
		if err != nil {
			return nil, err
		}
		if err := update(&c); err != nil {
			return nil, err
		}
		c.Name = name
		c.Version++
		v, err := json.Marshal(&c)
		if err != nil {
			return nil, err
		}
		ok, err := s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.key(KindCluster, name)), "=", rev)},
			clientv3.OpPut(s.key(KindCluster, name), string(v)))
		if err != nil {
			return nil, err
		}
		if ok {
			return &c, nil
		}
	}
	return nil, fmt.Errorf("update cluster %q: too many concurrent changes; retry", name)
}

// DeleteCluster deletes the cluster and its role assignments in one
// transaction when they fit in one (fewer than txnBudget assignments).
// Otherwise the cluster goes first, alone, and then its assignments in
// chunks: from the moment the cluster is gone they grant nothing (access is
// decided for registered clusters only) and no new one can be made for it
// (CreateAssignment requires the cluster), and a cluster created again
// under the name deletes every one left before it exists (CreateCluster).
// So a relay that stops between the chunks leaves harmless leftovers, which
// a retried DeleteCluster (answering ErrNotFound) also removes.
func (s *Etcd) DeleteCluster(ctx context.Context, name string) error {
	for range maxRetries {
		crev, err := s.getJSON(ctx, KindCluster, name, "cluster", new(Cluster))
		if errors.Is(err, ErrNotFound) {
			if err := s.deleteLeftovers(ctx, name); err != nil {
				s.log.Warn("deleting the role assignments left by a deleted cluster failed", "cluster", name, "err", err)
			}
		}
		if err != nil {
			return err
		}
		as, rev, err := s.assignmentsOf(ctx, name)
		if err != nil {
			return err
		}
		unchanged := clientv3.Compare(clientv3.ModRevision(s.key(KindCluster, name)), "=", crev)
		if len(as) < txnBudget {
			ok, err := s.txn(ctx, []clientv3.Cmp{unchanged, s.unchangedSince(KindAssignment, rev)},
				append(deleteOps(as), clientv3.OpDelete(s.key(KindCluster, name)))...)
			if err != nil || ok {
				return err
			}
			continue
		}
		ok, err := s.txn(ctx, []clientv3.Cmp{unchanged}, clientv3.OpDelete(s.key(KindCluster, name)))
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := s.deleteLeftovers(ctx, name); err != nil {
			return fmt.Errorf("cluster %q deleted, but some of its role assignments are left (they grant nothing, and go before a cluster of that name is created again; delete it again to remove them): %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("delete cluster %q: too many concurrent changes; retry", name)
}

// deleteLeftovers deletes the role assignments of cluster name while no
// cluster of that name exists. Once one does, what is listed under the
// name is its own (its CreateCluster deleted the leftovers) and stays.
func (s *Etcd) deleteLeftovers(ctx context.Context, name string) error {
	for range maxRetries {
		as, _, err := s.assignmentsOf(ctx, name)
		if err != nil || len(as) == 0 {
			return err
		}
		if _, err := etcdDeleteChunked(ctx, s, as, s.absent(name)); err != nil {
			return err
		}
		if _, err := s.getJSON(ctx, KindCluster, name, "cluster", new(Cluster)); err == nil {
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return errors.New("too many concurrent changes")
}

func (s *Etcd) InitCA(ctx context.Context, ca *CA) (*CA, error) {
	v, err := json.Marshal(ca)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext(ctx)
	defer cancel()
	k := s.key(kindMeta, "cluster-ca")
	r, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, s.wrap("write", err)
	}
	if r.Succeeded {
		out := *ca
		return &out, nil
	}
	var out CA
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, errors.New("etcd: the cluster CA vanished while being read")
	}
	return &out, json.Unmarshal(kvs[0].Value, &out)
}

func (s *Etcd) PutRole(ctx context.Context, r *RoleDefinition) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := opContext(ctx)
	defer cancel()
	_, err = s.cli.Put(ctx, s.key(KindRole, r.Name), string(v))
	return s.wrap("write", err)
}

func (s *Etcd) GetRole(ctx context.Context, name string) (*RoleDefinition, error) {
	return etcdGet[RoleDefinition](ctx, s, KindRole, name, "role")
}

func (s *Etcd) ListRoles(ctx context.Context) ([]*RoleDefinition, error) {
	out, _, err := etcdList[RoleDefinition](ctx, s, KindRole, nil)
	return out, err
}

func (s *Etcd) del(ctx context.Context, kind, name, what string) error {
	ctx, cancel := opContext(ctx)
	defer cancel()
	r, err := s.cli.Delete(ctx, s.key(kind, name))
	if err != nil {
		return s.wrap("write", err)
	}
	if r.Deleted == 0 {
		return fmt.Errorf("%s %q: %w", what, name, ErrNotFound)
	}
	return nil
}

func (s *Etcd) DeleteRole(ctx context.Context, name string) error {
	return s.del(ctx, KindRole, name, "role")
}

func (s *Etcd) CreateAssignment(ctx context.Context, a *RoleAssignment) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.key(KindAssignment, a.ID)), "=", 0)}
	if a.Cluster != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.key(KindCluster, a.Cluster)), ">", 0))
	}
	ok, err := s.txn(ctx, cmps, clientv3.OpPut(s.key(KindAssignment, a.ID), string(v)))
	if err != nil || ok {
		return err
	}
	var cur RoleAssignment
	if _, err := s.getJSON(ctx, KindAssignment, a.ID, "role assignment", &cur); err == nil {
		return fmt.Errorf("role assignment %q: %w", a.ID, ErrExists)
	}
	return fmt.Errorf("cluster %q: %w", a.Cluster, ErrNotFound)
}

func (s *Etcd) DeleteAssignment(ctx context.Context, id string) error {
	return s.del(ctx, KindAssignment, id, "role assignment")
}

func (s *Etcd) ListAssignments(ctx context.Context, cluster string) ([]*RoleAssignment, error) {
	out, _, err := etcdList(ctx, s, KindAssignment, func(a *RoleAssignment) bool { return cluster == "" || a.Cluster == cluster })
	return out, err
}

// etcdDeleteExpired deletes the values of kind that expired, each only if
// it did not change since it was read, in chunks, and returns those it
// deleted (with an error, those deleted before it). A chunk in which
// another replica swept (or changed) a key meanwhile is left to the next
// sweep; each deleted value is returned by one replica only.
func etcdDeleteExpired[T any](ctx context.Context, s *Etcd, kind string, expired func(*T) bool) ([]*T, error) {
	all, _, err := etcdListKeys(ctx, s, kind, expired)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	return etcdDeleteChunked(ctx, s, all)
}

func (s *Etcd) DeleteExpiredAssignments(ctx context.Context, now time.Time) ([]*RoleAssignment, error) {
	return etcdDeleteExpired(ctx, s, KindAssignment, func(a *RoleAssignment) bool { return a.Expired(now) })
}

func (s *Etcd) CreateToken(ctx context.Context, t *APIToken) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	ok, err := s.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.key(KindToken, t.ID)), "=", 0)},
		clientv3.OpPut(s.key(KindToken, t.ID), string(v)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("token %q: %w", t.ID, ErrExists)
	}
	return nil
}

func (s *Etcd) GetToken(ctx context.Context, id string) (*APIToken, error) {
	return etcdGet[APIToken](ctx, s, KindToken, id, "token")
}

func (s *Etcd) ListTokens(ctx context.Context) ([]*APIToken, error) {
	out, _, err := etcdList[APIToken](ctx, s, KindToken, nil)
	return out, err
}

func (s *Etcd) DeleteToken(ctx context.Context, id string) error {
	return s.del(ctx, KindToken, id, "token")
}

func (s *Etcd) DeleteExpiredTokens(ctx context.Context, now time.Time) (int, error) {
	gone, err := etcdDeleteExpired(ctx, s, KindToken, func(t *APIToken) bool { return t.Expired(now) })
	return len(gone), err
}

func (s *Etcd) Close() error { return s.cli.Close() }

// Client is the etcd client (the fleet's leases and ownership records
// share it); Prefix the key prefix.
func (s *Etcd) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix of the store.
func (s *Etcd) Prefix() string { return s.prefix }

// Watch calls fn for every change of a cluster, role, assignment or token
// until ctx ends, from now on, in order. When the watch breaks (etcd
// compacted the history it was at, or lost quorum for long), fn gets a
// Change of KindResync: state may have changed unseen, so caches must be
// dropped.
func (s *Etcd) Watch(ctx context.Context, fn func(Change)) {
	rev := int64(0)
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		// Without a leader the watch ends (so that a replica cut off from
		// the majority resyncs rather than waits on a stale member).
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		broke := false
		for resp := range s.cli.Watch(wctx, s.prefix, opts...) {
			if err := resp.Err(); err != nil {
				s.log.Warn("etcd watch broke; resyncing", "err", err)
				broke = true
				if resp.CompactRevision > 0 || errors.Is(err, rpctypes.ErrCompacted) {
					rev = 0
				}
				break
			}
			for _, ev := range resp.Events {
				if c, ok := s.change(ev); ok {
					fn(c)
				}
			}
			rev = resp.Header.Revision
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if broke || rev == 0 {
			fn(Change{Kind: KindResync})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// change decodes one watch event.
func (s *Etcd) change(ev *clientv3.Event) (Change, bool) {
	rest := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
	kind, name, ok := strings.Cut(rest, "/")
	switch {
	case !ok:
		return Change{}, false
	case kind == KindCluster, kind == KindRole, kind == KindAssignment, kind == KindToken:
	default:
		// meta, and the fleet's ownership records (relay/fleet): not store
		// state, no cache to drop.
		return Change{}, false
	}
	c := Change{Kind: kind, Name: name, Deleted: ev.Type == mvccpb.DELETE}
	if kind == KindCluster {
		var prev, cur Cluster
		if ev.PrevKv != nil {
			_ = json.Unmarshal(ev.PrevKv.Value, &prev)
		}
		if !c.Deleted {
			_ = json.Unmarshal(ev.Kv.Value, &cur)
			c.Replaced = ev.PrevKv != nil && (prev.UID != cur.UID || prev.CertGeneration != cur.CertGeneration)
		}
	}
	return c, true
}
