// Package authz maps a Kubernetes SubjectAccessReview to the Azure Arc
// data action it needs, and matches non-resource paths.
//
// The data action format is Arc's (the prefix is api.ActionPrefix):
//
//	Microsoft.Kubernetes/connectedClusters/<resource>[/<subresource>]/<verb>          core group ("")
//	Microsoft.Kubernetes/connectedClusters/<group>/<resource>[/<subresource>]/<verb>  named groups, CRDs included
//	Microsoft.Kubernetes/connectedClusters/<path without the leading slash>/<verb>    non-resource URLs
//
// Verbs map as in Arc: get, list, watch → read; create, update, patch →
// write; delete, deletecollection → delete; "*" stays "*"; every other verb
// (bind, escalate, use, impersonate, approve, sign, custom verbs) becomes
// "<verb>/action". The streaming subresources pods/exec, pods/attach and
// pods/portforward are "pods/<subresource>/action" whatever the verb (the
// apiserver asks with get or create depending on the protocol). Non-resource
// requests carry the lower-case HTTP method: get and head → read; post,
// put, patch → write; delete → delete; others "<method>/action"; the root
// path "/" is ".../read" directly under the prefix.
package authz

import (
	"fmt"
	"strings"

	authzv1 "k8s.io/api/authorization/v1"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

// maxActionLen bounds an action; the relay refuses longer ones.
const maxActionLen = 512

// streamingSubresources of pods are actions whatever the verb.
var streamingSubresources = map[string]bool{"exec": true, "attach": true, "portforward": true}

// Action is one data action at one scope.
type Action struct {
	// Name is the data action.
	Name string
	// Namespace is the scope: the request's namespace, or "" for the
	// cluster scope (cluster-scoped resources, requests across all
	// namespaces, non-resource URLs).
	Namespace string
}

// ResourceVerb maps a Kubernetes resource verb to Arc's verb suffix.
func ResourceVerb(verb string) string {
	switch verb {
	case "get", "list", "watch":
		return "read"
	case "create", "update", "patch":
		return "write"
	case "delete", "deletecollection":
		return "delete"
	case "*":
		return "*"
	default:
		return verb + "/action"
	}
}

// NonResourceVerb maps the lower-case HTTP method of a non-resource request
// to Arc's verb suffix.
func NonResourceVerb(verb string) string {
	switch verb {
	case "get", "head":
		return "read"
	case "post", "put", "patch":
		return "write"
	case "delete":
		return "delete"
	case "*":
		return "*"
	default:
		return verb + "/action"
	}
}

// ForResource returns the data action of resource attributes.
func ForResource(ra *authzv1.ResourceAttributes) (Action, error) {
	if ra == nil || ra.Resource == "" || ra.Verb == "" {
		return Action{}, fmt.Errorf("resource attributes need a resource and a verb")
	}
	var b strings.Builder
	b.WriteString(api.ActionPrefix)
	if ra.Group != "" {
		b.WriteString(ra.Group)
		b.WriteByte('/')
	}
	b.WriteString(ra.Resource)
	if ra.Subresource != "" {
		b.WriteByte('/')
		b.WriteString(ra.Subresource)
	}
	b.WriteByte('/')
	if ra.Group == "" && ra.Resource == "pods" && streamingSubresources[ra.Subresource] {
		b.WriteString("action")
	} else {
		b.WriteString(ResourceVerb(ra.Verb))
	}
	return checked(Action{Name: b.String(), Namespace: ra.Namespace})
}

// ForNonResource returns the data action of a non-resource request; its
// scope is the cluster.
func ForNonResource(na *authzv1.NonResourceAttributes) (Action, error) {
	if na == nil || na.Verb == "" || !strings.HasPrefix(na.Path, "/") {
		return Action{}, fmt.Errorf("non-resource attributes need a verb and an absolute path")
	}
	p := strings.Trim(na.Path, "/")
	if p != "" {
		p += "/"
	}
	return checked(Action{Name: api.ActionPrefix + p + NonResourceVerb(na.Verb)})
}

// For returns the data action of a review: resource attributes win, as in
// the apiserver.
func For(spec *authzv1.SubjectAccessReviewSpec) (Action, error) {
	switch {
	case spec.ResourceAttributes != nil:
		return ForResource(spec.ResourceAttributes)
	case spec.NonResourceAttributes != nil:
		return ForNonResource(spec.NonResourceAttributes)
	}
	return Action{}, fmt.Errorf("the review has neither resource nor non-resource attributes")
}

func checked(a Action) (Action, error) {
	if len(a.Name) > maxActionLen {
		return Action{}, fmt.Errorf("data action is %d bytes, over %d", len(a.Name), maxActionLen)
	}
	if strings.ContainsAny(a.Name, " \t\r\n") {
		return Action{}, fmt.Errorf("data action %q contains white space", a.Name)
	}
	return a, nil
}

// PathMatcher matches non-resource paths against patterns in RBAC's
// nonResourceURLs form: an exact path, or a prefix ending in "*"
// ("/openapi/*"), or "*" for every path.
type PathMatcher struct {
	exact    map[string]bool
	prefixes []string
}

// NewPathMatcher returns a matcher for patterns; no patterns match nothing.
func NewPathMatcher(patterns []string) (*PathMatcher, error) {
	m := &PathMatcher{exact: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case p == "*":
			m.prefixes = append(m.prefixes, "")
		case !strings.HasPrefix(p, "/"):
			return nil, fmt.Errorf("path pattern %q: want an absolute path, optionally ending in *", p)
		case strings.Count(p, "*") > 1 || (strings.Contains(p, "*") && !strings.HasSuffix(p, "*")):
			return nil, fmt.Errorf("path pattern %q: * is allowed only at the end", p)
		case strings.HasSuffix(p, "*"):
			m.prefixes = append(m.prefixes, strings.TrimSuffix(p, "*"))
		default:
			m.exact[p] = true
		}
	}
	return m, nil
}

// Match reports whether path matches a pattern.
func (m *PathMatcher) Match(path string) bool {
	if m == nil {
		return false
	}
	if m.exact[path] {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
