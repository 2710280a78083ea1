package relay_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"net/http"
	"strings"
	"testing"
)

func (e *env) checkAccess(id *tls.Config, oid string, groups []string, ns string, actions ...string) (int, []api.Decision) {
	e.t.Helper()
	var req api.CheckAccessRequest
	req.Subject.OID, req.Subject.Groups, req.Namespace, req.Actions = oid, groups, ns, actions
	b, _ := json.Marshal(req)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: id}}
	defer c.CloseIdleConnections()
	resp, err := c.Post(e.ts.URL+"/agent/v1/checkaccess", "application/json", strings.NewReader(string(b)))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out api.CheckAccessResponse
	json.Unmarshal(body, &out)
	return resp.StatusCode, out.Decisions
}

func (e *env) assign(role, principal, typ, cluster, ns string) string {
	e.t.Helper()
	code, b := e.api("POST", "/api/v1/roleassignments", fmt.Sprintf(`{"role":%q,"principalId":%q,"principalType":%q,"cluster":%q,"namespace":%q}`, role, principal, typ, cluster, ns))
	if code != 201 {
		e.t.Fatalf("assign: %d %s", code, b)
	}
	var a struct{ ID string }
	json.Unmarshal(b, &a)
	return a.ID
}

func TestCheckAccess(t *testing.T) {
	e := newEnv(t)
	id := e.identity("c")
	other := e.identity("other")
	const p = api.ActionPrefix
	e.assign("Viewer", "user-1", "User", "c", "")
	e.assign("Admin", "group-a", "Group", "c", "team-a")
	e.assign("Cluster Admin", "user-2", "User", "other", "") // on another cluster

	decide := func(oid string, groups []string, ns, action string) bool {
		t.Helper()
		code, ds := e.checkAccess(id, oid, groups, ns, action)
		if code != 200 || len(ds) != 1 {
			t.Fatalf("checkAccess: %d %v", code, ds)
		}
		return ds[0].Allowed
	}
	for _, tc := range []struct {
		oid    string
		groups []string
		ns     string
		action string
		want   bool
	}{
		{"user-1", nil, "default", p + "pods/read", true},
		{"user-1", nil, "", p + "namespaces/read", true},
		{"user-1", nil, "default", p + "secrets/read", false},
		{"user-9", []string{"group-a"}, "team-a", p + "rbac.authorization.k8s.io/rolebindings/write", true},
		{"user-9", []string{"group-a"}, "team-b", p + "pods/read", false},
		{"user-9", []string{"group-a"}, "", p + "namespaces/read", false},
		{"user-2", nil, "default", p + "pods/read", false}, // assigned on the other cluster only
	} {
		if got := decide(tc.oid, tc.groups, tc.ns, tc.action); got != tc.want {
			t.Errorf("%s %v in %q %s = %v, want %v", tc.oid, tc.groups, tc.ns, tc.action, got, tc.want)
		}
	}
	// The other cluster's identity sees only its own assignments.
	if code, ds := e.checkAccess(other, "user-2", nil, "x", p+"secrets/delete"); code != 200 || !ds[0].Allowed {
		t.Errorf("other cluster: %d %v", code, ds)
	}
	// A custom role with notDataActions.
	code, b := e.api("PUT", "/api/v1/roledefinitions/no-secrets", `{"dataActions":["`+p+`*"],"notDataActions":["`+p+`secrets/*"]}`)
	if code != 201 {
		t.Fatalf("custom role: %d %s", code, b)
	}
	aid := e.assign("no-secrets", "user-3", "User", "c", "")
	_, ds := e.checkAccess(id, "user-3", nil, "default", p+"pods/delete", p+"secrets/read")
	if !ds[0].Allowed || ds[1].Allowed || !strings.Contains(ds[0].Reason, "no-secrets assigned to user user-3") {
		t.Errorf("custom role decisions: %+v", ds)
	}
	// Removing the assignment takes effect at once on the relay.
	if code, _ := e.api("DELETE", "/api/v1/roleassignments/"+aid, ""); code != 204 {
		t.Fatal("delete assignment")
	}
	if decide("user-3", nil, "default", p+"pods/delete") {
		t.Error("removed assignment still allows")
	}
	// Built-ins are read-only; assigned custom roles cannot be deleted.
	if code, _ := e.api("PUT", "/api/v1/roledefinitions/Viewer", `{"dataActions":["`+p+`*"]}`); code != 400 {
		t.Errorf("changing a built-in: %d", code)
	}
	e.assign("no-secrets", "user-4", "User", "c", "")
	if code, _ := e.api("DELETE", "/api/v1/roledefinitions/no-secrets", ""); code != 409 {
		t.Errorf("deleting an assigned role: %d", code)
	}
	for _, body := range []string{`{"role":"Nope","principalId":"x","cluster":"c"}`, `{"role":"Viewer","principalId":"x","cluster":"missing"}`, `{"role":"Viewer","cluster":"c"}`, `{"role":"Viewer","principalId":"x","principalType":"Robot","cluster":"c"}`} {
		if code, _ := e.api("POST", "/api/v1/roleassignments", body); code != 400 {
			t.Errorf("bad assignment %s: %d", body, code)
		}
	}
	// Without a cluster certificate there is no checkAccess.
	if code, _ := e.checkAccess(&tls.Config{RootCAs: id.RootCAs}, "user-1", nil, "", p+"pods/read"); code != 401 {
		t.Errorf("checkAccess without a certificate: %d", code)
	}
	// Deleting the cluster removes its assignments.
	e.api("DELETE", "/api/v1/clusters/c", "")
	_, b = e.api("GET", "/api/v1/roleassignments?cluster=c", "")
	if !strings.Contains(string(b), `"value": []`) {
		t.Errorf("assignments after cluster delete: %s", b)
	}
}

// A user in the most groups checkAccess accepts (5 000 Entra object IDs,
// ~190 KB of JSON) gets a decision, not 400: guard would cache that as deny.
func TestCheckAccessWithMaxGroups(t *testing.T) {
	e := newEnv(t)
	id := e.identity("c")
	groups := make([]string, api.MaxCheckAccessGroups)
	for i := range groups {
		groups[i] = fmt.Sprintf("%08d-0000-4000-8000-%012d", i, i)
	}
	e.assign("Viewer", groups[len(groups)-1], "Group", "c", "")
	code, ds := e.checkAccess(id, "user-many-groups", groups, "default", api.ActionPrefix+"pods/read")
	if code != 200 || len(ds) != 1 || !ds[0].Allowed {
		t.Fatalf("checkAccess with %d groups: %d %v", len(groups), code, ds)
	}
}
