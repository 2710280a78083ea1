// Package cache holds guard's authorization decisions: allowed and denied
// decisions live for separate TTLs (cut short by the decision's
// ValidUntil) in a size-bounded LRU, keyed by the subject (oid and
// groups), the data action and the scope.
package cache

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// Defaults of [Config].
const (
	DefaultSize       = 10000
	DefaultAllowedTTL = time.Minute
	DefaultDeniedTTL  = 10 * time.Second
)

// Key identifies a decision. It is a hash, so that subjects with thousands
// of groups take no more memory than others.
type Key [sha256.Size]byte

// KeyOf returns the key of (oid, groups, action, namespace). The order and
// duplicates of groups do not matter.
func KeyOf(oid string, groups []string, action, namespace string) Key {
	gs := slices.Clone(groups)
	slices.Sort(gs)
	gs = slices.Compact(gs)
	h := sha256.New()
	var n [8]byte
	field := func(s string) { // length-prefixed: no two tuples encode alike
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(oid)
	field(action)
	field(namespace)
	binary.BigEndian.PutUint64(n[:], uint64(len(gs)))
	h.Write(n[:])
	for _, g := range gs {
		field(g)
	}
	var k Key
	h.Sum(k[:0])
	return k
}

// Decision is what is cached.
type Decision struct {
	Allowed bool
	Reason  string
	// ValidUntil, when set, is when the decision stops being true (an
	// assignment it rests on expires): it is not kept past it, whatever
	// the TTL. Zero means the TTL alone decides.
	ValidUntil time.Time
}

// Config configures a [Cache]; nil or zero fields mean the defaults.
type Config struct {
	// Size is the most entries kept; zero means DefaultSize. The least
	// recently used entry is evicted first.
	Size int
	// AllowedTTL and DeniedTTL are how long allowed and denied decisions
	// are kept; zero means the defaults (1 min, 10 s), negative means such
	// decisions are not cached.
	AllowedTTL, DeniedTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Cache is safe for concurrent use.
type Cache struct {
	size                  int
	allowedTTL, deniedTTL time.Duration
	now                   func() time.Time

	mu    sync.Mutex
	ll    *list.List // front: most recently used
	items map[Key]*list.Element
}

type entry struct {
	key     Key
	d       Decision
	expires time.Time
}

// New returns an empty cache.
func New(cfg *Config) *Cache {
	if cfg == nil {
		cfg = &Config{}
	}
	c := &Cache{size: cfg.Size, allowedTTL: cfg.AllowedTTL, deniedTTL: cfg.DeniedTTL, now: cfg.Now, ll: list.New(), items: map[Key]*list.Element{}}
	if c.size <= 0 {
		c.size = DefaultSize
	}
	if c.allowedTTL == 0 {
		c.allowedTTL = DefaultAllowedTTL
	}
	if c.deniedTTL == 0 {
		c.deniedTTL = DefaultDeniedTTL
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Get returns the unexpired decision for k.
func (c *Cache) Get(k Key) (Decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return Decision{}, false
	}
	e := el.Value.(*entry)
	if !c.now().Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, k)
		return Decision{}, false
	}
	c.ll.MoveToFront(el)
	return e.d, true
}

// Put stores d under k for the TTL of its kind, or until d.ValidUntil if
// that is sooner, evicting the least recently used entry when full.
func (c *Cache) Put(k Key, d Decision) {
	ttl := c.deniedTTL
	if d.Allowed {
		ttl = c.allowedTTL
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	exp := now.Add(ttl)
	if !d.ValidUntil.IsZero() && d.ValidUntil.Before(exp) {
		exp = d.ValidUntil
	}
	if ttl < 0 || !now.Before(exp) {
		if el, ok := c.items[k]; ok { // a newer decision replaces an older one
			c.ll.Remove(el)
			delete(c.items, k)
		}
		return
	}
	if el, ok := c.items[k]; ok {
		e := el.Value.(*entry)
		e.d, e.expires = d, exp
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&entry{key: k, d: d, expires: exp})
	for c.ll.Len() > c.size {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*entry).key)
	}
}

// Len returns the number of entries, expired ones not yet dropped included.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
