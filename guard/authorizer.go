package guard

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	authzv1 "k8s.io/api/authorization/v1"

	"github.com/clusterconnect/clusterconnect/guard/authz"
	"github.com/clusterconnect/clusterconnect/guard/cache"
	"github.com/clusterconnect/clusterconnect/guard/checkaccess"
	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// FailureMode is how a SubjectAccessReview is answered when the relay
// cannot answer and nothing is cached.
type FailureMode string

const (
	// FailureDeny answers denied (the default): nobody gains access while
	// the relay is unreachable.
	FailureDeny FailureMode = "deny"
	// FailureNoOpinion answers no opinion; the request is then forbidden
	// unless another authorizer allowed it.
	FailureNoOpinion FailureMode = "no-opinion"
)

// DefaultRelayBackoff is AuthorizerConfig.RelayBackoff's default.
const DefaultRelayBackoff = 2 * time.Second

// Checker asks the relay; *checkaccess.Client implements it.
type Checker interface {
	Check(ctx context.Context, req *api.CheckAccessRequest) (*api.CheckAccessResponse, error)
}

// AuthorizerConfig configures an [Authorizer].
type AuthorizerConfig struct {
	// Checker asks the relay. Required.
	Checker Checker
	// Cache holds decisions; nil means a cache with the defaults.
	Cache *cache.Cache
	// SkipUsers and SkipGroups get no opinion without asking the relay.
	SkipUsers, SkipGroups []string
	// AllowedPaths are non-resource paths (RBAC nonResourceURLs patterns)
	// allowed for get and head without asking the relay; nil allows none.
	AllowedPaths *authz.PathMatcher
	// GroupsPrefix, when set, is what the token authenticator prepends to
	// Entra group IDs (--groups-prefix): only groups with it are sent to
	// the relay, without it. Groups in the system: namespace are never sent.
	GroupsPrefix string
	// FailureMode answers when the relay cannot; empty means FailureDeny.
	FailureMode FailureMode
	// RelayBackoff is how long after a failed call cache misses are
	// answered per FailureMode without calling the relay again, so that a
	// down relay costs the apiserver one timeout, not one per request;
	// zero means DefaultRelayBackoff, negative means no back-off.
	RelayBackoff time.Duration
	// Metrics; nil records nothing.
	Metrics *Metrics
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authorizer answers SubjectAccessReviews from the relay's role
// assignments. It is safe for concurrent use.
type Authorizer struct {
	cfg        AuthorizerConfig
	skipUsers  map[string]bool
	skipGroups map[string]bool

	mu        sync.Mutex
	downUntil time.Time
	downErr   error
}

// NewAuthorizer checks cfg.
func NewAuthorizer(cfg AuthorizerConfig) (*Authorizer, error) {
	if cfg.Checker == nil {
		return nil, fmt.Errorf("guard: authorizer needs a relay checker")
	}
	switch cfg.FailureMode {
	case "":
		cfg.FailureMode = FailureDeny
	case FailureDeny, FailureNoOpinion:
	default:
		return nil, fmt.Errorf("guard: relay failure mode %q: want deny or no-opinion", cfg.FailureMode)
	}
	if cfg.Cache == nil {
		cfg.Cache = cache.New(nil)
	}
	if cfg.RelayBackoff == 0 {
		cfg.RelayBackoff = DefaultRelayBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authorizer{cfg: cfg, skipUsers: map[string]bool{}, skipGroups: map[string]bool{}}
	for _, u := range cfg.SkipUsers {
		a.skipUsers[u] = true
	}
	for _, g := range cfg.SkipGroups {
		a.skipGroups[g] = true
	}
	return a, nil
}

func noOpinion(reason string) authzv1.SubjectAccessReviewStatus {
	return authzv1.SubjectAccessReviewStatus{Reason: reason}
}

// Authorize decides one review. It never fails: what goes wrong becomes
// no opinion or a denial with a reason.
func (a *Authorizer) Authorize(ctx context.Context, spec *authzv1.SubjectAccessReviewSpec) authzv1.SubjectAccessReviewStatus {
	st, src := a.authorize(ctx, spec)
	result := ResultNoOpinion
	switch {
	case st.Allowed:
		result = ResultAllowed
	case st.Denied:
		result = ResultDenied
	}
	a.cfg.Metrics.decision(result, src)
	a.cfg.Logger.Debug("authorization decision", "user", spec.User, "result", result, "source", string(src), "reason", st.Reason)
	return st
}

func (a *Authorizer) authorize(ctx context.Context, spec *authzv1.SubjectAccessReviewSpec) (authzv1.SubjectAccessReviewStatus, Source) {
	switch {
	case spec.User == "":
		return noOpinion("guard: no user"), SourceNotGuarded
	case strings.HasPrefix(spec.User, "system:"):
		return noOpinion("guard: system: users are left to Kubernetes RBAC"), SourceNotGuarded
	case a.skipUsers[spec.User]:
		return noOpinion("guard: user is on the skip list"), SourceNotGuarded
	}
	for _, g := range spec.Groups {
		if a.skipGroups[g] {
			return noOpinion("guard: group " + g + " is on the skip list"), SourceNotGuarded
		}
	}
	oids := spec.Extra["oid"]
	if len(oids) != 1 || oids[0] == "" {
		return noOpinion("guard: the user has no Entra object ID (oid extra); left to Kubernetes RBAC"), SourceNotGuarded
	}
	oid := oids[0]
	if na := spec.NonResourceAttributes; spec.ResourceAttributes == nil && na != nil &&
		(na.Verb == "get" || na.Verb == "head") && a.cfg.AllowedPaths.Match(na.Path) {
		return authzv1.SubjectAccessReviewStatus{Allowed: true, Reason: "guard: " + na.Path + " is allowed to every Entra user"}, SourcePath
	}
	action, err := authz.For(spec)
	if err != nil {
		return noOpinion("guard: " + err.Error()), SourceInvalid
	}
	groups := a.groups(spec.Groups)
	key := cache.KeyOf(oid, groups, action.Name, action.Namespace)
	if d, ok := a.cfg.Cache.Get(key); ok {
		a.cfg.Metrics.cacheLookup(true)
		return status(action, d), SourceCache
	}
	a.cfg.Metrics.cacheLookup(false)
	if err := a.down(); err != nil {
		return a.failure(action, err), SourceRelayError
	}
	start := time.Now()
	resp, err := a.cfg.Checker.Check(ctx, &api.CheckAccessRequest{
		Subject:   api.Subject{OID: oid, Groups: groups},
		Actions:   []string{action.Name},
		Namespace: action.Namespace,
	})
	took := time.Since(start).Seconds()
	if se, refused := checkaccess.Refused(err); refused {
		a.cfg.Metrics.relayCall("refused", took)
		d := cache.Decision{Reason: fmt.Sprintf("the relay refused the access check (HTTP %d): %s", se.Code, se.Message)}
		a.cfg.Cache.Put(key, d)
		a.cfg.Logger.Warn("relay refused checkAccess; denying", "user", spec.User, "action", action.Name, "code", se.Code, "message", se.Message)
		return status(action, d), SourceRelayRefused
	}
	if err != nil {
		a.cfg.Metrics.relayCall("error", took)
		a.markDown(err)
		a.cfg.Logger.Warn("relay checkAccess failed", "action", action.Name, "err", err, "failure_mode", string(a.cfg.FailureMode))
		return a.failure(action, err), SourceRelayError
	}
	a.cfg.Metrics.relayCall("ok", took)
	rd, _ := checkaccess.DecisionFor(resp, action.Name) // Check guarantees it is there
	// A time-bound assignment behind the decision ends it: not cached past
	// then.
	d := cache.Decision{Allowed: rd.Allowed, Reason: rd.Reason, ValidUntil: resp.ValidUntil}
	a.cfg.Cache.Put(key, d)
	return status(action, d), SourceRelay
}

// groups are the group IDs sent to the relay: sorted, without duplicates,
// without system: groups, and with the configured prefix removed.
func (a *Authorizer) groups(in []string) []string {
	out := make([]string, 0, len(in))
	for _, g := range in {
		if p := a.cfg.GroupsPrefix; p != "" {
			var ok bool
			if g, ok = strings.CutPrefix(g, p); !ok {
				continue
			}
		}
		if g != "" && !strings.HasPrefix(g, "system:") {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func scope(a authz.Action) string {
	if a.Namespace == "" {
		return "cluster scope"
	}
	return "namespace " + a.Namespace
}

func status(a authz.Action, d cache.Decision) authzv1.SubjectAccessReviewStatus {
	if d.Allowed {
		return authzv1.SubjectAccessReviewStatus{Allowed: true, Reason: d.Reason}
	}
	return authzv1.SubjectAccessReviewStatus{Denied: true, Reason: fmt.Sprintf("%s denied at %s: %s", a.Name, scope(a), d.Reason)}
}

func (a *Authorizer) failure(act authz.Action, err error) authzv1.SubjectAccessReviewStatus {
	msg := fmt.Sprintf("the relay could not decide %s at %s: %v", act.Name, scope(act), err)
	if a.cfg.FailureMode == FailureNoOpinion {
		return noOpinion("guard: " + msg)
	}
	return authzv1.SubjectAccessReviewStatus{Denied: true, Reason: "guard: " + msg}
}

func (a *Authorizer) down() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.downErr != nil && a.cfg.Now().Before(a.downUntil) {
		return fmt.Errorf("not asked again for %s after: %w", a.cfg.RelayBackoff, a.downErr)
	}
	return nil
}

func (a *Authorizer) markDown(err error) {
	if a.cfg.RelayBackoff < 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.downUntil, a.downErr = a.cfg.Now().Add(a.cfg.RelayBackoff), err
}
