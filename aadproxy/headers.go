package aadproxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/clusterconnect/clusterconnect/pkg/entra"
)

// Impersonation headers the proxy sets (k8s.io/api/authentication/v1).
const (
	HeaderImpersonateUser        = "Impersonate-User"
	HeaderImpersonateGroup       = "Impersonate-Group"
	HeaderImpersonateExtraPrefix = "Impersonate-Extra-"
)

// groupAuthenticated is added to every impersonated user, as the apiserver
// adds it to every authenticated one.
const groupAuthenticated = "system:authenticated"

// untrusted reports whether a client header must never reach the apiserver
// from a client: impersonation (but see clientImpersonation) and the
// front-proxy headers (X-Remote-*), which the apiserver would only honour
// from a front-proxy client certificate, stripped anyway.
func untrusted(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "impersonate-") || strings.HasPrefix(n, "x-remote-")
}

// clientImpersonation reports whether name is one of the apiserver's
// impersonation headers (Impersonate-User, -Group, -Uid, -Extra-<key>),
// which a pass-through token may send: the apiserver authorizes them for
// the token's own user.
func clientImpersonation(name string) bool {
	switch n := strings.ToLower(name); n {
	case "impersonate-user", "impersonate-group", "impersonate-uid":
		return true
	default:
		return strings.HasPrefix(n, "impersonate-extra-") && len(n) > len("impersonate-extra-")
	}
}

// impersonationHeaders returns the names of the client's Impersonate-*
// headers, sorted.
func impersonationHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "impersonate-") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// rewriteHeaders makes the outgoing headers of a request: every untrusted
// header is removed first, except, with keepImpersonation (a pass-through
// token), the client's impersonation headers. Then, for an identity,
// Authorization is removed too (the proxy's own credentials are added by
// its transport) and the impersonation headers are set. Without an
// identity Authorization stays as the client sent it.
func rewriteHeaders(h http.Header, id *entra.Identity, keepImpersonation bool) {
	for k := range h {
		if untrusted(k) && !(keepImpersonation && id == nil && clientImpersonation(k)) {
			delete(h, k)
		}
	}
	if id == nil {
		return
	}
	h.Del("Authorization")
	h.Set(HeaderImpersonateUser, id.Username)
	groups := append(slices.Clone(id.Groups), groupAuthenticated)
	h[HeaderImpersonateGroup] = slices.Compact(groups)
	for k, vs := range id.Extra() {
		if len(vs) == 0 || vs[0] == "" {
			continue
		}
		// Extra keys are percent-encoded in the header name (the apiserver
		// decodes them); values are sent as they are.
		h[HeaderImpersonateExtraPrefix+url.PathEscape(k)] = slices.Clone(vs)
	}
}

// bearer returns the bearer token of r, if any.
func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(v[7:])
	return t, t != ""
}

// verb names the Kubernetes verb of a request roughly as the apiserver's
// RequestInfo would, for the audit line: get/list/watch/create/update/
// patch/delete/deletecollection, or the lowercase method for non-resource
// paths.
func verb(r *http.Request) string {
	q := r.URL.Query()
	if w := q.Get("watch"); w == "true" || w == "1" {
		return "watch"
	}
	parts := resourceParts(r.URL.Path)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if parts == nil {
			return "get"
		}
		if len(parts) == 1 {
			return "list"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		if len(parts) == 1 {
			return "deletecollection"
		}
		return "delete"
	default:
		return strings.ToLower(r.Method)
	}
}

// resourceParts returns the path segments after the API group version and
// the namespace (resource[, name[, subresource]]), or nil for a
// non-resource path.
func resourceParts(p string) []string {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case len(segs) >= 3 && segs[0] == "api":
		segs = segs[2:]
	case len(segs) >= 4 && segs[0] == "apis":
		segs = segs[3:]
	default:
		return nil
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		segs = segs[2:]
	}
	return segs
}
