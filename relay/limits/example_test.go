package limits_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/clusterconnect/clusterconnect/relay/limits"
)

// A handler admits each request before it costs anything, and releases
// it when the request is over.
func ExampleLimiter_Admit() {
	l := limits.New(limits.Config{CallerRate: 0.5, CallerBurst: 1}, nil)
	serve := func(w http.ResponseWriter, r *http.Request) {
		release, refusal := l.Admit("user:alice", "prod", limits.LongRunning(r))
		if refusal != nil {
			refusal.Write(w)
			return
		}
		defer release()
		fmt.Fprintln(w, "proxied")
	}
	for range 2 {
		w := httptest.NewRecorder()
		serve(w, httptest.NewRequest("GET", "/clusters/prod/api/v1/pods", nil))
		fmt.Printf("%d Retry-After: %q\n", w.Code, w.Header().Get("Retry-After"))
	}
	// Output:
	// 200 Retry-After: ""
	// 429 Retry-After: "2"
}
