package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// protocols are the transports the main server is tested over: the client
// of selfSigned for HTTP/1.1, and one that negotiates h2 with the same
// roots.
func protocols(t *testing.T, h1 *http.Client) map[string]*http.Client {
	t.Helper()
	tr := h1.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	t.Cleanup(tr.CloseIdleConnections)
	return map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2.0": {Transport: tr, Timeout: h1.Timeout}}
}

func getWithHeader(c *http.Client, url string, size int) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("X-Big", strings.Repeat("a", size))
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A server without MaxHeaderBytes gets DefaultMaxHeaderBytes (not
// net/http's 1 MiB): a large Entra token fits, a 300 KiB header does not.
func TestDefaultMaxHeaderBytes(t *testing.T) {
	r, h1 := start(t, Config{}, hello)
	for proto, client := range protocols(t, h1) {
		if code, err := getWithHeader(client, "https://"+r.addr+"/", 100<<10); err != nil || code != http.StatusOK {
			t.Errorf("%s: 100 KiB header: %d %v, want 200", proto, code, err)
		}
		// HTTP/1 answers 431; an h2 client refuses to send what the
		// server's SETTINGS_MAX_HEADER_LIST_SIZE does not allow.
		if code, err := getWithHeader(client, "https://"+r.addr+"/", 300<<10); err == nil && code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: 300 KiB header: %d, want 431 or a refusal", proto, code)
		}
	}
}

// A MaxHeaderBytes the caller set is kept.
func TestMaxHeaderBytesKept(t *testing.T) {
	r, client := start(t, Config{Server: &http.Server{MaxHeaderBytes: 8 << 10}}, hello)
	if code, err := getWithHeader(client, "https://"+r.addr+"/", 20<<10); err != nil || code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("20 KiB header with an 8 KiB limit: %d %v, want 431", code, err)
	}
}

// readAll answers 200 with the body's length, 408 when BodyDeadline's
// deadline passes while it reads.
var readAll = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	switch {
	case IsTimeout(err):
		http.Error(w, "body not received in time", http.StatusRequestTimeout)
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		io.WriteString(w, strings.Repeat("x", len(b)))
	}
})

// A client that trickles its body (here: sends a byte and stops) is
// answered 408 once the deadline passes, over either protocol; a body that
// arrives in time is read as usual.
func TestBodyDeadline(t *testing.T) {
	r, h1 := start(t, Config{}, BodyDeadline(readAll, 200*time.Millisecond))
	for proto, client := range protocols(t, h1) {
		t.Run(proto, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("{"))
			// Without the deadline nothing would answer: give up then (the
			// transport waits for the body, so end that too).
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+r.addr+"/", pr)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("trickled body: %v, want a 408 before the client gives up", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout || resp.Proto != proto {
				t.Errorf("trickled body: %s %d, want %s 408", resp.Proto, resp.StatusCode, proto)
			}
			resp, err = client.Post("https://"+r.addr+"/", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(b) != "xx" {
				t.Errorf("prompt body: %d %q", resp.StatusCode, b)
			}
		})
	}
}

func TestIsTimeout(t *testing.T) {
	for err, want := range map[error]bool{
		os.ErrDeadlineExceeded:                                true,
		fmt.Errorf("read body: %w", os.ErrDeadlineExceeded):   true,
		&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}: true,
		errors.New("boom"):                                    false,
		io.ErrUnexpectedEOF:                                   false,
	} {
		if got := IsTimeout(err); got != want {
			t.Errorf("IsTimeout(%v) = %v", err, got)
		}
	}
}

// Without a writer that can set deadlines (a test recorder) the handler is
// served as it is.
func TestBodyDeadlineWithoutDeadlines(t *testing.T) {
	w := httptest.NewRecorder()
	BodyDeadline(readAll, time.Millisecond).ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("abc")))
	if w.Code != http.StatusOK || w.Body.String() != "xxx" {
		t.Errorf("%d %q", w.Code, w.Body)
	}
}
