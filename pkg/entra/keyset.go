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
// once per minRefresh (callers wait for the next allowed refresh rather
// than fail), and it reports typed errors.
type keySet struct {
	url        string
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration
	metrics    *Metrics
	log        *slog.Logger

	fetch chan struct{} // semaphore: one fetch at a time

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time // zero: never
}

func newKeySet(url string, client *http.Client, algs []string, minRefresh time.Duration, m *Metrics, log *slog.Logger) *keySet {
	ks := &keySet{url: url, client: client, minRefresh: minRefresh, metrics: m, log: log, fetch: make(chan struct{}, 1)}
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
	keys, fetched := k.snapshot()
	if payload, found, err := verifyWith(jws, keys, kid); found {
		return payload, err
	}
	keys, err = k.refresh(ctx, fetched)
	if err != nil {
		return nil, err
	}
	if payload, found, err := verifyWith(jws, keys, kid); found {
		return payload, err
	}
	if kid == "" {
		return nil, refuse(ReasonBadSignature, "the signature (without a key ID) verifies with none of the issuer's keys")
	}
	return nil, refuse(ReasonBadSignature, "signed with key %q, which the issuer does not publish at %s", kid, k.url)
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

func (k *keySet) snapshot() ([]jose.JSONWebKey, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.fetched
}

// refresh fetches the JWKS unless someone did since seen, waiting until
// minRefresh has passed since the last fetch.
func (k *keySet) refresh(ctx context.Context, seen time.Time) ([]jose.JSONWebKey, error) {
	select {
	case k.fetch <- struct{}{}:
	case <-ctx.Done():
		return nil, refuse(ReasonIssuerUnavailable, "waiting for the JWKS refresh: %w", ctx.Err())
	}
	defer func() { <-k.fetch }()
	keys, fetched := k.snapshot()
	if fetched.After(seen) {
		return keys, nil
	}
	if wait := k.minRefresh - time.Since(fetched); !fetched.IsZero() && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, refuse(ReasonIssuerUnavailable, "waiting for the JWKS refresh: %w", ctx.Err())
		}
	}
	keys, err := k.get(ctx)
	k.metrics.jwksRefresh(err)
	if err != nil {
		k.log.Warn("JWKS refresh failed", "url", k.url, "err", err)
		return nil, refuse(ReasonIssuerUnavailable, "fetch the issuer's signing keys from %s: %w", k.url, err)
	}
	k.mu.Lock()
	k.keys, k.fetched = keys, time.Now()
	k.mu.Unlock()
	k.log.Info("JWKS refreshed", "url", k.url, "keys", len(keys))
	return keys, nil
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
