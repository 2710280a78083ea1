package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterconnect/clusterconnect/pkg/api"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer for one writer and a reader at the end.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []api.AuditRecord {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []api.AuditRecord
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var r api.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func rec(i int, cluster, id, name string) api.AuditRecord {
	return api.AuditRecord{Time: t0.Add(time.Duration(i) * time.Second), Kind: api.AuditRequest, Cluster: cluster,
		Principal: api.Principal{Kind: api.PrincipalKindUser, ID: id, Name: name}, Method: "GET", Path: fmt.Sprintf("/r/%d", i), Status: 200}
}

func paths(rs []api.AuditRecord) string {
	var ps []string
	for _, r := range rs {
		ps = append(ps, r.Path)
	}
	return strings.Join(ps, " ")
}

func TestQuery(t *testing.T) {
	l := New(Config{})
	l.Record(rec(0, "prod", "oid-alice", "alice@example.com"))
	l.Record(rec(1, "staging", "oid-alice", "alice@example.com"))
	l.Record(rec(2, "prod", "tok-1", "ci"))
	l.Record(rec(3, "prod", "oid-bob", "Bob@example.com"))
	l.Record(rec(4, "prod", "oid-alice", "alice@example.com"))
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{}, "/r/0 /r/1 /r/2 /r/3 /r/4"},
		{Filter{Cluster: "prod"}, "/r/0 /r/2 /r/3 /r/4"},
		{Filter{User: "oid-alice"}, "/r/0 /r/1 /r/4"},
		{Filter{User: "ALICE@example.com"}, "/r/0 /r/1 /r/4"},
		{Filter{User: "bob@example.com"}, "/r/3"},
		{Filter{User: "ci", Cluster: "prod"}, "/r/2"},
		{Filter{Since: t0.Add(3 * time.Second)}, "/r/3 /r/4"},
		{Filter{Limit: 2}, "/r/3 /r/4"},
		{Filter{Cluster: "prod", Limit: 3}, "/r/2 /r/3 /r/4"},
		{Filter{User: "oid-alice", Since: t0.Add(time.Second), Limit: 1}, "/r/4"},
		{Filter{Cluster: "nope"}, ""},
	} {
		if got := paths(l.Query(tc.f)); got != tc.want {
			t.Errorf("Query(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestKeep(t *testing.T) {
	l := New(Config{Keep: 3})
	for i := range 7 {
		l.Record(rec(i, "prod", "a", ""))
	}
	if got, want := paths(l.Query(Filter{})), "/r/4 /r/5 /r/6"; got != want {
		t.Errorf("kept %q, want the newest 3: %q", got, want)
	}
	if got, want := paths(l.Query(Filter{Limit: 2})), "/r/5 /r/6"; got != want {
		t.Errorf("Limit 2 = %q, want %q", got, want)
	}
	none := New(Config{Keep: -1})
	none.Record(rec(0, "prod", "a", ""))
	if got := none.Query(Filter{}); got != nil {
		t.Errorf("Keep -1 kept %v", got)
	}
}

func TestRecordStampsAndCopies(t *testing.T) {
	now := t0.Add(time.Hour)
	l := New(Config{Now: func() time.Time { return now }})
	groups := []string{"g1"}
	l.Record(api.AuditRecord{Kind: api.AuditRequest, Principal: api.Principal{ID: "a", Groups: groups}})
	groups[0] = "changed"
	got := l.Query(Filter{})
	if len(got) != 1 || !got[0].Time.Equal(now) || got[0].Principal.Groups[0] != "g1" {
		t.Fatalf("recorded %+v; want Time from Now and the groups as they were", got)
	}
	got[0].Principal.Groups[0] = "mine"
	if again := l.Query(Filter{}); again[0].Principal.Groups[0] != "g1" {
		t.Errorf("a query's result shares memory with the log")
	}
}

// The JSON line carries every field of api.AuditRecord, under its tag.
func TestJSONLine(t *testing.T) {
	var buf syncBuffer
	l := New(Config{Writer: &buf})
	full := api.AuditRecord{Time: t0, Kind: api.AuditSession, Event: api.AuditEnd,
		Principal:   api.Principal{Kind: api.PrincipalKindToken, ID: "tok-1", Name: "ci", Groups: []string{"g"}, Via: "bearer"},
		Impersonate: "system:serviceaccount:ns:sa", Cluster: "prod", Method: "POST", Path: "/api/v1/namespaces/ns/pods/p/exec?command=sh",
		Status: 101, Reason: "x", BytesIn: 12, BytesOut: 34, DurationMS: 5.5, Client: "10.0.0.1"}
	l.Record(full)
	if err := l.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	buf.mu.Lock()
	line := buf.buf.String()
	buf.mu.Unlock()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("want one line, got %q", line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[api.AuditRecord]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if _, ok := m[name]; !ok {
			t.Errorf("line has no %q: %s", name, line)
		}
	}
	if len(m) != typ.NumField() {
		t.Errorf("line has %d fields, api.AuditRecord %d: %s", len(m), typ.NumField(), line)
	}
	if got := buf.lines(t); len(got) != 1 || !reflect.DeepEqual(got[0], full) {
		t.Errorf("line decodes to %+v, want %+v", got, full)
	}
}

func TestConcurrentRecord(t *testing.T) {
	var buf syncBuffer
	l := New(Config{Writer: &buf, Keep: 1000})
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				l.Record(rec(i, fmt.Sprint("c", g), "u", ""))
				if i%50 == 0 {
					l.Query(Filter{Cluster: "c0", Limit: 10})
				}
			}
		})
	}
	wg.Wait()
	if err := l.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	lines := buf.lines(t)
	if len(lines) != goroutines*each || l.Errors() != 0 || l.Dropped() != 0 {
		t.Errorf("wrote %d lines (errors %d, dropped %d), want %d", len(lines), l.Errors(), l.Dropped(), goroutines*each)
	}
	// The file and memory agree on the order.
	kept := l.Query(Filter{})
	if len(kept) != 1000 || !reflect.DeepEqual(kept, lines[len(lines)-1000:]) {
		t.Errorf("kept %d records, not the last 1000 lines in order", len(kept))
	}
	// Each goroutine's records are in its order.
	next := map[string]int{}
	for _, r := range lines {
		if want := fmt.Sprintf("/r/%d", next[r.Cluster]); r.Path != want {
			t.Fatalf("%s: line %s, want %s", r.Cluster, r.Path, want)
		}
		next[r.Cluster]++
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorsCounted(t *testing.T) {
	var logs syncBuffer
	l := New(Config{Writer: failingWriter{}, Logger: newLogger(&logs)})
	for i := range 3 {
		l.Record(rec(i, "prod", "a", ""))
		if err := l.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if l.Errors() != 3 {
		t.Errorf("Errors() = %d, want 3", l.Errors())
	}
	if len(l.Query(Filter{})) != 3 {
		t.Errorf("records not kept in memory when the writer fails")
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if n := strings.Count(logs.buf.String(), "disk full"); n != 1 {
		t.Errorf("logged the write error %d times, want once (rate-limited):\n%s", n, logs.buf.String())
	}
}

// stuckWriter blocks every Write until released.
type stuckWriter struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	lines   int
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	w.lines += bytes.Count(p, []byte("\n"))
	w.mu.Unlock()
	return len(p), nil
}

// A stuck writer holds up neither Record nor memory: past Buffer waiting
// records, lines are dropped and counted.
func TestStuckWriterDoesNotBlock(t *testing.T) {
	w := &stuckWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	l := New(Config{Writer: w, Buffer: 2})
	l.Record(rec(0, "prod", "a", ""))
	<-w.entered // the writer holds line 0
	l.Record(rec(1, "prod", "a", ""))
	l.Record(rec(2, "prod", "a", ""))
	l.Record(rec(3, "prod", "a", "")) // beyond Buffer
	if l.Dropped() != 1 {
		t.Errorf("Dropped() = %d, want 1", l.Dropped())
	}
	if got := len(l.Query(Filter{})); got != 4 {
		t.Errorf("kept %d records in memory, want all 4", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush with a stuck writer and a done context = %v, want context.Canceled", err)
	}
	close(w.release)
	if err := l.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w.lines != 3 {
		t.Errorf("wrote %d lines, want 3", w.lines)
	}
}

func TestNoWriterNoGoroutine(t *testing.T) {
	l := New(Config{})
	l.Record(rec(0, "prod", "a", ""))
	l.mu.Lock()
	running := l.drained != nil
	l.mu.Unlock()
	if running {
		t.Error("a Log without a Writer started a writer")
	}
	if err := l.Flush(t.Context()); err != nil {
		t.Error(err)
	}
}
