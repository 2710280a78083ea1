package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keySet is an oidc.KeySet over a remote JWKS. Unlike go-oidc's
// RemoteKeySet it refreshes only for a key ID it does not know (a token
// with a known key ID and a bad signature is forged, not rotated), at most
// once per minRefresh, and it reports typed errors.
//
// A token with an unknown key ID never waits for the next allowed refresh:
// within minRefresh of the last attempt it is refused at once, so that a
// flood of forged key IDs neither reaches the issuer nor holds connections.
// Only callers that arrive while an allowed refresh is in flight wait, for
// that one fetch, and share its outcome.
type keySet struct {
	url        string
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration
	now        func() time.Time
	metrics    *Metrics
	log        *slog.Logger

	fetch chan struct{} // semaphore: one fetch at a time

	mu   sync.Mutex
	keys []jose.JSONWebKey
	// gen counts finished fetch attempts; tried is when the last one
	// finished (zero: never) and tryErr its error (nil: keys are its keys).
	gen    uint64
	tried  time.Time
	tryErr error
}

// keyState is what one look at a keySet saw.
type keyState struct {
	keys  []jose.JSONWebKey
	gen   uint64
	tried time.Time
	err   error
}

// newKeySet returns the key set of the JWKS at url; now is its clock.
func newKeySet(url string, client *http.Client, algs []string, minRefresh time.Duration, now func() time.Time, m *Metrics, log *slog.Logger) *keySet {
	ks := &keySet{url: url, client: client, minRefresh: minRefresh, now: now, metrics: m, log: log, fetch: make(chan struct{}, 1)}
	for _, a := range algs {
		ks.algs = append(ks.algs, jose.SignatureAlgorithm(a))
	}
	return ks
}

// errSlotKey carries a *error through go-oidc, which formats the key set's
// error with %v and so loses its type.
type errSlotKey struct{}

func withErrSlot(ctx context.Context) (context.Context, *error) {
	slot := new(error)
	return context.WithValue(ctx, errSlotKey{}, slot), slot
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	payload, err := k.verify(ctx, raw)
	if err != nil {
		if slot, ok := ctx.Value(errSlotKey{}).(*error); ok {
			*slot = err
		}
	}
	return payload, err
}

func (k *keySet) verify(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, k.algs)
	if err != nil {
		return nil, refuse(ReasonMalformed, "not a verifiable JWS: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, refuse(ReasonMalformed, "want exactly one signature, got %d", len(jws.Signatures))
	}
	kid := jws.Signatures[0].Header.KeyID
	seen := k.state()
	if payload, found, err := verifyWith(jws, seen.keys, kid); found {
		return payload, err
	}
	fresh, err := k.refresh(ctx, seen, kid)
	if err != nil {
		return nil, err
	}
	if payload, found, err := verifyWith(jws, fresh.keys, kid); found {
		return payload, err
	}
	return nil, k.unknownKey(kid, fresh)
}

// unknownKey is the refusal of a token whose key ID (or, without one, whose
// signature) matches none of the keys of st.
func (k *keySet) unknownKey(kid string, st keyState) error {
	age := k.now().Sub(st.tried).Round(time.Second)
	if kid == "" {
		return refuse(ReasonBadSignature, "the signature (without a key ID) verifies with none of the issuer's keys at %s (refreshed %s ago)", k.url, age)
	}
	return refuse(ReasonUnknownKey, "signed with key ID %q, which is not among the issuer's keys at %s (refreshed %s ago; a key the issuer publishes later is fetched at most every %s)", kid, k.url, age, k.minRefresh)
}

// verifyWith tries the keys matching kid (all keys when kid is empty).
// found reports whether a matching key existed (then err is the outcome);
// with kid empty, found means verified.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) (payload []byte, found bool, err error) {
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		p, err := jws.Verify(&key)
		if err == nil {
			return p, true, nil
		}
		if kid != "" {
			return nil, true, refuse(ReasonBadSignature, "the signature does not verify with the issuer's key %q", kid)
		}
	}
	return nil, false, nil
}

func (k *keySet) state() keyState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return keyState{keys: k.keys, gen: k.gen, tried: k.tried, err: k.tryErr}
}

// refresh returns the keys to try once more for kid, which the keys of
// seen lack. An attempt that finished since seen is shared; otherwise, when
// the last attempt is less than minRefresh old, kid is refused at once
// (without waiting for the next allowed refresh), and else the JWKS is
// fetched, by one caller for all who arrive meanwhile.
func (k *keySet) refresh(ctx context.Context, seen keyState, kid string) (keyState, error) {
	if err := k.tooSoon(seen, kid); err != nil {
		return keyState{}, err
	}
	select {
	case k.fetch <- struct{}{}:
	case <-ctx.Done():
		return keyState{}, refuse(ReasonIssuerUnavailable, "waiting for the JWKS refresh: %w", ctx.Err())
	}
	defer func() { <-k.fetch }()
	if st := k.state(); st.gen != seen.gen {
		// The fetch this caller waited for (or a later one).
		return st, k.fetchErr(st)
	}
	keys, err := k.get(ctx)
	k.metrics.jwksRefresh(err)
	if err != nil && ctx.Err() != nil {
		// This caller gave up; that says nothing about the issuer, so it
		// is not remembered as an attempt (the next caller tries).
		return keyState{}, refuse(ReasonIssuerUnavailable, "fetch the issuer's signing keys from %s: %w", k.url, err)
	}
	k.mu.Lock()
	k.gen++
	k.tried, k.tryErr = k.now(), err
	if err == nil {
		k.keys = keys
	}
	k.mu.Unlock()
	st := k.state()
	if err != nil {
		k.log.Warn("JWKS refresh failed", "url", k.url, "err", err)
	} else {
		k.log.Info("JWKS refreshed", "url", k.url, "keys", len(keys))
	}
	return st, k.fetchErr(st)
}

// tooSoon refuses kid when no attempt finished since seen and the last one
// is less than minRefresh old: the keys are as fresh as they may be.
func (k *keySet) tooSoon(seen keyState, kid string) error {
	st := k.state()
	if st.gen != seen.gen || st.tried.IsZero() || k.now().Sub(st.tried) >= k.minRefresh {
		return nil
	}
	if err := k.fetchErr(st); err != nil {
		return err
	}
	return k.unknownKey(kid, st)
}

// fetchErr is the refusal for a failed last attempt, nil after a good one.
func (k *keySet) fetchErr(st keyState) error {
	if st.err == nil {
		return nil
	}
	return refuse(ReasonIssuerUnavailable, "fetch the issuer's signing keys from %s: %w (next attempt at most every %s)", k.url, st.err, k.minRefresh)
}

func (k *keySet) get(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	// Decode key by key: one key of an unknown type must not hide the rest.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not JSON: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil || !key.IsPublic() || key.Use == "enc" {
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no usable public signing key")
	}
	return keys, nil
}
