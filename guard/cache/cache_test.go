package cache

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }

func TestKeyOf(t *testing.T) {
	base := KeyOf("oid", []string{"g1", "g2"}, "a", "ns")
	if KeyOf("oid", []string{"g2", "g1", "g2"}, "a", "ns") != base {
		t.Error("group order and duplicates changed the key")
	}
	for _, other := range []Key{
		KeyOf("oid2", []string{"g1", "g2"}, "a", "ns"),
		KeyOf("oid", []string{"g1"}, "a", "ns"),
		KeyOf("oid", []string{"g1", "g2"}, "b", "ns"),
		KeyOf("oid", []string{"g1", "g2"}, "a", ""),
		KeyOf("oid", []string{"g1g2"}, "a", "ns"),
		KeyOf("oidg1", []string{"g2"}, "a", "ns"),
	} {
		if other == base {
			t.Error("different tuples share a key")
		}
	}
}

func TestTTLs(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c := New(&Config{AllowedTTL: time.Minute, DeniedTTL: 10 * time.Second, Now: clk.now})
	allow, deny := KeyOf("u", nil, "read", ""), KeyOf("u", nil, "write", "")
	c.Put(allow, Decision{Allowed: true, Reason: "Viewer"})
	c.Put(deny, Decision{Reason: "nothing"})
	if d, ok := c.Get(allow); !ok || !d.Allowed || d.Reason != "Viewer" {
		t.Fatalf("allowed: %+v %v", d, ok)
	}
	if d, ok := c.Get(deny); !ok || d.Allowed {
		t.Fatalf("denied: %+v %v", d, ok)
	}
	clk.advance(10 * time.Second)
	if _, ok := c.Get(deny); ok {
		t.Error("denied decision outlived its TTL")
	}
	if _, ok := c.Get(allow); !ok {
		t.Error("allowed decision expired with the denied TTL")
	}
	clk.advance(50*time.Second - time.Nanosecond)
	if _, ok := c.Get(allow); !ok {
		t.Error("allowed decision expired early")
	}
	clk.advance(time.Nanosecond)
	if _, ok := c.Get(allow); ok {
		t.Error("allowed decision outlived its TTL")
	}
	if c.Len() != 0 {
		t.Errorf("expired entries kept: %d", c.Len())
	}
}

func TestPutReplacesAndRefreshes(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c := New(&Config{AllowedTTL: time.Minute, DeniedTTL: 10 * time.Second, Now: clk.now})
	k := KeyOf("u", nil, "read", "ns")
	c.Put(k, Decision{Allowed: true})
	clk.advance(30 * time.Second)
	c.Put(k, Decision{Allowed: false, Reason: "revoked"})
	if d, _ := c.Get(k); d.Allowed || d.Reason != "revoked" {
		t.Errorf("replaced decision: %+v", d)
	}
	clk.advance(10 * time.Second)
	if _, ok := c.Get(k); ok {
		t.Error("the replacement keeps the TTL of its own kind")
	}
}

// A decision resting on an assignment that expires is not kept past it,
// however long its TTL; one that expires later than the TTL keeps the TTL.
func TestValidUntil(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c := New(&Config{AllowedTTL: time.Minute, DeniedTTL: 10 * time.Second, Now: clk.now})
	soon, late := KeyOf("u", nil, "read", "ns"), KeyOf("u", nil, "write", "ns")
	c.Put(soon, Decision{Allowed: true, Reason: "JIT Viewer", ValidUntil: clk.t.Add(20 * time.Second)})
	c.Put(late, Decision{Allowed: true, ValidUntil: clk.t.Add(time.Hour)})
	clk.advance(20*time.Second - time.Nanosecond)
	if d, ok := c.Get(soon); !ok || d.Reason != "JIT Viewer" {
		t.Fatalf("before ValidUntil: %+v %v", d, ok)
	}
	clk.advance(time.Nanosecond)
	if _, ok := c.Get(soon); ok {
		t.Error("an allowed decision outlived its ValidUntil")
	}
	if _, ok := c.Get(late); !ok {
		t.Error("a ValidUntil after the TTL cut the TTL short")
	}
	clk.advance(40 * time.Second)
	if _, ok := c.Get(late); ok {
		t.Error("a ValidUntil after the TTL lengthened it")
	}
	// Already past: not cached, and it replaces an older decision.
	k := KeyOf("u", nil, "delete", "ns")
	c.Put(k, Decision{Allowed: true})
	c.Put(k, Decision{Allowed: true, ValidUntil: clk.t})
	if _, ok := c.Get(k); ok || c.Len() != 0 {
		t.Errorf("a decision already past its ValidUntil was cached (len %d)", c.Len())
	}
}

func TestNegativeTTLDisables(t *testing.T) {
	c := New(&Config{AllowedTTL: -1, DeniedTTL: time.Second})
	k := KeyOf("u", nil, "read", "")
	c.Put(k, Decision{Reason: "denied"})
	c.Put(k, Decision{Allowed: true})
	if _, ok := c.Get(k); ok || c.Len() != 0 {
		t.Error("an uncached allowed decision must drop the older denied one")
	}
}

func TestSizeBoundLRU(t *testing.T) {
	c := New(&Config{Size: 3})
	keys := make([]Key, 5)
	for i := range keys {
		keys[i] = KeyOf(fmt.Sprint("u", i), nil, "read", "")
	}
	c.Put(keys[0], Decision{Allowed: true})
	c.Put(keys[1], Decision{Allowed: true})
	c.Put(keys[2], Decision{Allowed: true})
	c.Get(keys[0]) // 1 is now the least recently used
	c.Put(keys[3], Decision{Allowed: true})
	if c.Len() != 3 {
		t.Fatalf("len %d, want 3", c.Len())
	}
	if _, ok := c.Get(keys[1]); ok {
		t.Error("the least recently used entry was not evicted")
	}
	for _, i := range []int{0, 2, 3} {
		if _, ok := c.Get(keys[i]); !ok {
			t.Errorf("entry %d evicted", i)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := New(nil)
	if c.size != DefaultSize || c.allowedTTL != DefaultAllowedTTL || c.deniedTTL != DefaultDeniedTTL {
		t.Errorf("defaults: %d %s %s", c.size, c.allowedTTL, c.deniedTTL)
	}
}

func TestConcurrent(t *testing.T) {
	c := New(&Config{Size: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				k := KeyOf(fmt.Sprint(g), nil, fmt.Sprint(i%100), "")
				c.Put(k, Decision{Allowed: i%2 == 0})
				c.Get(k)
			}
		})
	}
	wg.Wait()
	if c.Len() > 64 {
		t.Errorf("len %d over the bound", c.Len())
	}
}

func BenchmarkKeyAndGet(b *testing.B) {
	c := New(nil)
	groups := make([]string, 50)
	for i := range groups {
		groups[i] = fmt.Sprintf("%08d-0000-0000-0000-000000000000", i)
	}
	c.Put(KeyOf("oid", groups, "Microsoft.Kubernetes/connectedClusters/pods/read", "team-a"), Decision{Allowed: true})
	b.ReportAllocs()
	for b.Loop() {
		c.Get(KeyOf("oid", groups, "Microsoft.Kubernetes/connectedClusters/pods/read", "team-a"))
	}
}
