package kubelet

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// logStore holds container log lines and wakes followers on appends.
type logStore struct {
	mu      sync.Mutex
	lines   map[podRef][]string
	changed chan struct{} // closed and replaced on every append
}

func newLogStore() *logStore {
	return &logStore{lines: map[podRef][]string{}, changed: make(chan struct{})}
}

// AppendLog adds a line to the log of namespace/pod/container; a missing
// trailing newline is added. Followers (`kubectl logs -f`) receive it at
// once.
func (k *Kubelet) AppendLog(namespace, pod, container, line string) {
	if !strings.HasSuffix(line, "\n") {
		line += "\n"
	}
	ref := podRef{namespace: namespace, pod: pod, container: container}
	s := k.logs
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines[ref] = append(s.lines[ref], line)
	close(s.changed)
	s.changed = make(chan struct{})
}

// since returns the lines of ref from index i on, and a channel closed on
// the next append.
func (s *logStore) since(ref podRef, i int) ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.lines[ref]
	if i > len(all) {
		i = len(all)
	}
	return append([]string(nil), all[i:]...), s.changed
}

// serveContainerLogs serves GET /containerLogs/{ns}/{pod}/{container}
// with the query parameters follow and tailLines (tail is accepted as an
// alias, like the real kubelet); other PodLogOptions are ignored.
func (k *Kubelet) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	ref := refOf(r)
	ref.uid = ""
	q := r.URL.Query()
	follow, _ := strconv.ParseBool(q.Get("follow"))
	tail := -1
	for _, name := range []string{"tailLines", "tail"} {
		if v := q.Get(name); v != "" && v != "all" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				http.Error(w, `{"message": "Unable to decode query."}`, http.StatusBadRequest)
				return
			}
			tail = n
		}
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	k.logger.Info("container logs", "pod", ref.fullName(), "container", ref.container, "follow", follow, "tail", tail)

	lines, changed := k.logs.since(ref, 0)
	next := len(lines) // index of the first line not yet considered
	if tail >= 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for {
		for _, l := range lines {
			if _, err := w.Write([]byte(l)); err != nil {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		if !follow {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
		lines, changed = k.logs.since(ref, next)
		next += len(lines)
	}
}
