package relay_test

import (
	"crypto/tls"
	"encoding/json"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func (e *env) heartbeat(id *tls.Config, body string) (int, string) {
	e.t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: id}}
	defer c.CloseIdleConnections()
	resp, err := c.Post(e.ts.URL+"/agent/v1/heartbeat", "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) get(name string) api.ConnectedCluster {
	e.t.Helper()
	code, b := e.api("GET", "/api/v1/clusters/"+name, "")
	if code != 200 {
		e.t.Fatalf("get %s: %d %s", name, code, b)
	}
	var v api.ConnectedCluster
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func TestHeartbeatMetadataAndStatus(t *testing.T) {
	e := newEnvWith(t, 300*time.Millisecond)
	id := e.identity("hb")
	if v := e.get("hb"); v.Properties.ConnectivityStatus != "Connecting" || v.Location != "local" || v.Type != "clusterconnect/connectedClusters" || v.ID != "/providers/clusterconnect/connectedClusters/hb" {
		t.Fatalf("before any heartbeat: %+v", v)
	}
	code, b := e.heartbeat(id, `{"metadata":{"kubernetesVersion":"v1.37.2","agentVersion":"v0.1.0","totalNodeCount":3,"totalCoreCount":12,"distribution":"aks","infrastructure":"azure"}}`)
	if code != 200 || !strings.Contains(b, `"connectivityStatus": "Connected"`) {
		t.Fatalf("heartbeat: %d %s", code, b)
	}
	v := e.get("hb")
	p := v.Properties
	if p.ConnectivityStatus != "Connected" || p.KubernetesVersion != "v1.37.2" || p.TotalNodeCount != 3 || p.TotalCoreCount != 12 || p.Distribution != "aks" || p.LastConnectivityTime.IsZero() {
		t.Fatalf("after a heartbeat: %+v", p)
	}
	// A heartbeat without metadata keeps the last metadata.
	e.heartbeat(id, `{}`)
	if p := e.get("hb").Properties; p.TotalNodeCount != 3 {
		t.Fatalf("metadata lost: %+v", p)
	}
	// No heartbeat for longer than OfflineAfter: Offline, and the sweeper
	// records the transition.
	deadline := time.Now().Add(10 * time.Second)
	for {
		v = e.get("hb")
		n := len(v.Properties.Events)
		if v.Properties.ConnectivityStatus == "Offline" && n > 0 && v.Properties.Events[n-1].To == "Offline" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Offline transition recorded: %+v", v.Properties)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.heartbeat(id, `{}`)
	ev := e.get("hb").Properties.Events
	var path []string
	for _, x := range ev {
		path = append(path, x.To)
	}
	if got := strings.Join(path, ">"); got != "Connecting>Connected>Offline>Connected" {
		t.Fatalf("status history %s", got)
	}
	// Heartbeats need the cluster's certificate.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: id.RootCAs}}}
	defer c.CloseIdleConnections()
	resp, _ := c.Post(e.ts.URL+"/agent/v1/heartbeat", "application/json", strings.NewReader(`{}`))
	if code, _, _ := status(t, resp); code != 401 {
		t.Fatalf("heartbeat without a certificate: %d", code)
	}
	if code, _ := e.heartbeat(id, `{"metadata":{"bogus":1}}`); code != 400 {
		t.Fatalf("malformed heartbeat: %d", code)
	}
}

func TestEtagAndTags(t *testing.T) {
	e := newEnv(t)
	e.api("POST", "/api/v1/clusters", `{"name":"t1","tags":{"env":"prod"}}`)
	e.api("POST", "/api/v1/clusters", `{"name":"t2","tags":{"env":"dev"}}`)
	v := e.get("t1")
	patch := func(etag, body string) (int, []byte) {
		req, _ := http.NewRequest("PATCH", e.ts.URL+"/api/v1/clusters/t1", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if etag != "" {
			req.Header.Set("If-Match", etag)
		}
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, b := patch(v.Etag, `{"tags":{"env":"prod","team":"a"}}`)
	if code != 200 {
		t.Fatalf("patch with the current etag: %d %s", code, b)
	}
	// The same (now stale) etag again: 412, nothing changed.
	code, b = patch(v.Etag, `{"tags":{"env":"stale"}}`)
	if code != 412 || !strings.Contains(string(b), "changed since you read it") {
		t.Fatalf("patch with a stale etag: %d %s", code, b)
	}
	if tags := e.get("t1").Tags; tags["env"] != "prod" || tags["team"] != "a" {
		t.Fatalf("tags after the refused patch: %v", tags)
	}
	req, _ := http.NewRequest("DELETE", e.ts.URL+"/api/v1/clusters/t1", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("If-Match", v.Etag)
	resp, _ := e.ts.Client().Do(req)
	if code, _, _ := status(t, resp); code != 412 {
		t.Fatalf("delete with a stale etag: %d", code)
	}
	// List filters by tag and status.
	list := func(q string) []string {
		code, b := e.api("GET", "/api/v1/clusters"+q, "")
		if code != 200 {
			t.Fatalf("list %s: %d %s", q, code, b)
		}
		var l api.ClusterList
		json.Unmarshal(b, &l)
		var names []string
		for _, c := range l.Value {
			names = append(names, c.Name)
		}
		return names
	}
	if got := strings.Join(list("?tag=env=prod"), ","); got != "t1" {
		t.Errorf("tag filter: %s", got)
	}
	if got := strings.Join(list("?status=Connecting"), ","); got != "t1,t2" {
		t.Errorf("status filter: %s", got)
	}
	if got := list("?status=Connected"); len(got) != 0 {
		t.Errorf("status filter Connected: %v", got)
	}
	if code, _ := e.api("GET", "/api/v1/clusters?status=Happy", ""); code != 400 {
		t.Errorf("unknown status filter: %d", code)
	}
	if code, _ := e.api("PATCH", "/api/v1/clusters/t1", `{"tags":{"a/b":"x"}}`); code != 400 {
		t.Errorf("bad tag name: %d", code)
	}
}
