// Package httpjson reads and writes the relay's JSON bodies: strict decoding
// with a size limit and an error that shows the expected shape, and indented
// answers.
package httpjson

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
)

// Write answers v as JSON with the given status code.
func Write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Decode reads the request body into v, refusing unknown fields and bodies
// over limit bytes. On failure it has answered 400 with a message naming the
// expected shape (example, if not empty) and returns false.
func Decode(w http.ResponseWriter, r *http.Request, v any, limit int64, example string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if serve.IsTimeout(err) {
			apistatus.Error(w, http.StatusRequestTimeout, "the request body did not arrive in time: send it at once")
			return false
		}
		shape := "of the documented shape"
		if example != "" {
			shape = "like " + example
		}
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("request body must be JSON %s (at most %d KiB): %v", shape, limit>>10, err))
		return false
	}
	return true
}
