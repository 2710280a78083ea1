package limits

import (
	"net/http"
	"net/url"
	"strings"
)

// LongRunning reports whether r opens a stream that stays open for as long
// as the client wants, and so counts against the long-running budget:
//
//   - an upgrade (an Upgrade header, or Upgrade among the Connection
//     tokens): exec, attach, port-forward and cp over SPDY or WebSocket, and
//     a pod, service or node proxy that upgrades; a request to exec, attach
//     or portforward without one is refused by the API server at once;
//   - CONNECT (HTTP/2 extended CONNECT, WebSocket over HTTP/2);
//   - a watch: the watch query parameter, or a legacy /watch/ path;
//   - logs -f: follow on a pods/log path.
//
// Boolean parameters are read as the API server reads them: present and
// neither "0" nor "false" (in any case) is true, "watch=" included, so a
// client cannot run a watch on the short-request budget.
//
// Unlike the API server's own long-running check, logs without follow and
// proxy requests without an upgrade count as short: they end when the
// upstream's answer does.
func LongRunning(r *http.Request) bool {
	if r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" || hasToken(r.Header["Connection"], "upgrade") {
		return true
	}
	path := r.URL.Path
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		if boolParam(q, "watch") {
			return true
		}
		if (strings.HasSuffix(path, "/log") || strings.HasSuffix(path, "/log/")) && boolParam(q, "follow") {
			return true
		}
	}
	return legacyWatch(path)
}

// hasToken reports whether a comma-separated header holds token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// boolParam reads a boolean query parameter as the API server does
// (k8s.io/apimachinery runtime.Convert_Slice_string_To_bool).
func boolParam(q url.Values, name string) bool {
	v, ok := q[name]
	if !ok || len(v) == 0 {
		return false
	}
	return v[0] != "0" && !strings.EqualFold(v[0], "false")
}

// legacyWatch reports a /api/v1/watch/… or /apis/<group>/<version>/watch/…
// path, anywhere in path (it may still carry the relay's /clusters/<name>
// prefix, and a cluster may be called "api").
func legacyWatch(path string) bool {
	if !strings.Contains(path, "/watch") {
		return false
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segs {
		if (s == "api" && i+2 < len(segs) && segs[i+2] == "watch") ||
			(s == "apis" && i+3 < len(segs) && segs[i+3] == "watch") {
			return true
		}
	}
	return false
}
