package limits

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLongRunning(t *testing.T) {
	const pod = "/api/v1/namespaces/default/pods/web"
	for _, tc := range []struct {
		name    string
		method  string
		target  string
		headers map[string]string
		want    bool
	}{
		{"get", "GET", pod, nil, false},
		{"list", "GET", "/api/v1/pods?limit=500", nil, false},
		{"watch=true", "GET", "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1", nil, true},
		{"watch=1", "GET", "/apis/apps/v1/deployments?watch=1", nil, true},
		{"watch= (true to the API server)", "GET", "/api/v1/pods?watch=", nil, true},
		{"watch=TRUE", "GET", "/api/v1/pods?watch=TRUE", nil, true},
		{"watch=false", "GET", "/api/v1/pods?watch=false", nil, false},
		{"watch=False", "GET", "/api/v1/pods?watch=False", nil, false},
		{"watch=0", "GET", "/api/v1/pods?watch=0", nil, false},
		{"relay prefix", "GET", "/clusters/prod/api/v1/pods?watch=true", nil, true},
		{"legacy watch path", "GET", "/api/v1/watch/namespaces/default/pods", nil, true},
		{"legacy watch path, group", "GET", "/apis/apps/v1/watch/deployments", nil, true},
		{"legacy watch, prefix, cluster named api", "GET", "/clusters/api/api/v1/watch/pods", nil, true},
		{"pod named watch", "GET", "/api/v1/namespaces/default/pods/watch", nil, false},
		{"logs -f", "GET", pod + "/log?follow=true&container=app", nil, true},
		{"logs", "GET", pod + "/log?container=app", nil, false},
		{"logs follow=false", "GET", pod + "/log?follow=false", nil, false},
		{"follow elsewhere", "GET", pod + "?follow=true", nil, false},
		{"exec over SPDY", "POST", pod + "/exec?command=sh&stdin=true&tty=true",
			map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}, true},
		{"exec over WebSocket", "GET", pod + "/exec?command=ls",
			map[string]string{"Connection": "keep-alive, Upgrade", "Upgrade": "websocket"}, true},
		{"attach", "POST", pod + "/attach?stdin=true", map[string]string{"Connection": "upgrade", "Upgrade": "SPDY/3.1"}, true},
		{"port-forward", "POST", pod + "/portforward", map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}, true},
		{"proxy upgrade", "GET", "/api/v1/namespaces/default/services/web:80/proxy/ws",
			map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, true},
		{"Upgrade header alone", "GET", pod + "/exec", map[string]string{"Upgrade": "websocket"}, true},
		{"Connection: Upgrade alone", "GET", pod + "/exec", map[string]string{"Connection": "Upgrade"}, true},
		{"exec without upgrade (refused by the API server)", "POST", pod + "/exec?command=ls", nil, false},
		{"proxy without upgrade", "GET", "/api/v1/namespaces/default/services/web:80/proxy/metrics", nil, false},
		{"Connection: keep-alive", "GET", pod, map[string]string{"Connection": "keep-alive"}, false},
		{"Connection: upgrade-insecure (not the token)", "GET", pod, map[string]string{"Connection": "upgraded"}, false},
		{"CONNECT", "CONNECT", pod + "/portforward", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			if got := LongRunning(r); got != tc.want {
				t.Errorf("LongRunning(%s %s %v) = %v, want %v", tc.method, tc.target, tc.headers, got, tc.want)
			}
		})
	}
}

func BenchmarkLongRunning(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/clusters/prod/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&limit=500", nil)
	b.ReportAllocs()
	for b.Loop() {
		LongRunning(r)
	}
}
