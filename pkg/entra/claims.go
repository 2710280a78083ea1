package entra

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// maxTokenSize bounds what is parsed at all; Entra tokens are a few KiB.
const maxTokenSize = 64 << 10

// Header is the JOSE header of a compact JWS.
type Header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// Claims are the claims of an Entra access token this package reads.
type Claims struct {
	Issuer            string
	Audience          []string
	Subject           string
	Expiry, NotBefore time.Time // zero when absent
	TenantID          string    // tid
	ObjectID          string    // oid
	Version           string    // ver: "1.0" or "2.0"
	Groups            []string
	// ClaimNames and ClaimSources are Entra's distributed-claims pointer,
	// present instead of groups on overage.
	ClaimNames   map[string]string
	ClaimSources map[string]ClaimSource

	raw map[string]json.RawMessage
}

// ClaimSource is one entry of _claim_sources.
type ClaimSource struct {
	Endpoint string `json:"endpoint"`
}

// String returns the string claim name, and whether it is present and a
// non-empty string.
func (c *Claims) String(name string) (string, bool) {
	v, ok := c.raw[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(v, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

// HasGroupsOverage reports whether the token points to its groups instead
// of carrying them.
func (c *Claims) HasGroupsOverage() bool {
	_, ok := c.ClaimNames["groups"]
	return ok
}

// Peek splits a compact JWS and parses its header and claims without
// verifying anything. On an error the claims are nil if the token is not a
// JWT at all, and otherwise hold what did parse (so that the caller can
// still tell whose token it claims to be).
func Peek(raw string) (*Header, *Claims, error) {
	if len(raw) > maxTokenSize {
		return nil, nil, fmt.Errorf("token is %d bytes, over %d", len(raw), maxTokenSize)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("a compact JWS has 3 dot-separated parts, this has %d", len(parts))
	}
	hb, err := decodeSegment(parts[0])
	if err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	var h Header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	pb, err := decodeSegment(parts[1])
	if err != nil {
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	c, err := ParseClaims(pb)
	return &h, c, err
}

func decodeSegment(s string) ([]byte, error) {
	// JWS uses unpadded base64url; tolerate padding as some encoders add it.
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// ParseClaims parses a JWT payload. Types are checked strictly: a claim of
// the wrong JSON type is an error, not a silently empty value; the claims
// that did parse are returned with it. A payload that is not a JSON object
// gives nil claims.
func ParseClaims(payload []byte) (*Claims, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("claims are not a JSON object: %w", err)
	}
	if raw == nil {
		return nil, errors.New("claims are not a JSON object")
	}
	c := &Claims{raw: raw}
	var errs []error
	str := func(name string, dst *string) {
		if v, ok := raw[name]; ok && json.Unmarshal(v, dst) != nil {
			errs = append(errs, fmt.Errorf("claim %s: want a string", name))
		}
	}
	str("iss", &c.Issuer)
	str("sub", &c.Subject)
	str("tid", &c.TenantID)
	str("oid", &c.ObjectID)
	str("ver", &c.Version)
	if v, ok := raw["aud"]; ok {
		var one string
		if json.Unmarshal(v, &one) == nil {
			c.Audience = []string{one}
		} else if json.Unmarshal(v, &c.Audience) != nil {
			errs = append(errs, errors.New("claim aud: want a string or an array of strings"))
		}
	}
	date := func(name string, dst *time.Time) {
		v, ok := raw[name]
		if !ok {
			return
		}
		var n json.Number
		if err := json.Unmarshal(v, &n); err != nil {
			errs = append(errs, fmt.Errorf("claim %s: want a NumericDate", name))
			return
		}
		f, err := n.Float64()
		if err != nil || math.IsNaN(f) || f < 0 || f > 1<<40 {
			errs = append(errs, fmt.Errorf("claim %s: %q is not a usable NumericDate", name, n))
			return
		}
		sec, frac := math.Modf(f)
		*dst = time.Unix(int64(sec), int64(frac*1e9))
	}
	date("exp", &c.Expiry)
	date("nbf", &c.NotBefore)
	if v, ok := raw["groups"]; ok && json.Unmarshal(v, &c.Groups) != nil {
		errs = append(errs, errors.New("claim groups: want an array of strings"))
	}
	if v, ok := raw["_claim_names"]; ok && json.Unmarshal(v, &c.ClaimNames) != nil {
		errs = append(errs, errors.New("claim _claim_names: want an object of strings"))
	}
	if v, ok := raw["_claim_sources"]; ok && json.Unmarshal(v, &c.ClaimSources) != nil {
		errs = append(errs, errors.New("claim _claim_sources: want an object of {endpoint}"))
	}
	return c, errors.Join(errs...)
}
