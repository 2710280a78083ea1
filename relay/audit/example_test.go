package audit_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/relay/audit"
)

// A handler meters each request and records it when it is over; an
// upgraded session gets a start record on hijack and an end record when
// its connection closes.
func ExampleMeter() {
	fixed := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	log := audit.New(audit.Config{Writer: os.Stdout})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })

	handler := func(w http.ResponseWriter, r *http.Request) {
		base := api.AuditRecord{Cluster: "prod", Principal: api.Principal{Kind: api.PrincipalKindUser, ID: "oid-1"}}
		m, mw, mr := audit.Meter(w, r)
		m.OnHijack(func() { log.Record(m.Fill(base)) })
		m.OnClose(func() { log.Record(m.Fill(base)) })
		next.ServeHTTP(mw, mr)
		if !m.Hijacked() {
			rec := m.Fill(base)
			rec.Time, rec.DurationMS = fixed, 1.5 // for a stable output
			log.Record(rec)
		}
	}
	handler(httptest.NewRecorder(), httptest.NewRequest("GET", "/clusters/prod/api/v1/pods", nil))
	log.Flush(context.Background())
	fmt.Println(len(log.Query(audit.Filter{Cluster: "prod"})))
	// Output:
	// {"time":"2026-11-25T14:00:00Z","kind":"request","principal":{"kind":"user","id":"oid-1"},"cluster":"prod","method":"GET","path":"/clusters/prod/api/v1/pods","status":200,"bytesIn":0,"bytesOut":5,"durationMs":1.5,"client":"192.0.2.1"}
	// 1
}
