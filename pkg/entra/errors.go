package entra

import (
	"errors"
	"fmt"
)

// Reason says why a token was refused. The values are stable: they label
// the authn failure metric and appear in messages.
type Reason string

const (
	// ReasonMalformed: the token claims an Entra issuer but its JOSE
	// structure or claims do not parse.
	ReasonMalformed Reason = "malformed"
	// ReasonAlgorithm: the signature algorithm is not allowed ("none" and
	// HMAC never are).
	ReasonAlgorithm Reason = "unsupported_algorithm"
	// ReasonUnknownIssuer: an Entra-shaped issuer of a tenant that is not
	// configured.
	ReasonUnknownIssuer Reason = "unknown_issuer"
	// ReasonBadSignature: the signature does not verify with the issuer's
	// key it names (or, naming none, with any of them).
	ReasonBadSignature Reason = "bad_signature"
	// ReasonUnknownKey: the token names a key ID the issuer does not
	// publish, as of a JWKS fetched at most MinRefreshInterval ago (or just
	// now for it). Not worth a retry: forged, or from another issuer.
	ReasonUnknownKey Reason = "unknown_key"
	// ReasonExpired: exp is in the past (beyond the clock skew).
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: nbf is in the future (beyond the clock skew).
	ReasonNotYetValid Reason = "not_yet_valid"
	// ReasonWrongAudience: aud names none of the configured audiences.
	ReasonWrongAudience Reason = "wrong_audience"
	// ReasonInvalidIdentity: no usable user name, a tid that does not match
	// the issuer, or a name or group in the reserved system: namespace.
	ReasonInvalidIdentity Reason = "invalid_identity"
	// ReasonGroupsOverage: the token has too many groups to carry them and
	// they could not be resolved.
	ReasonGroupsOverage Reason = "groups_overage"
	// ReasonIssuerUnavailable: discovery or the JWKS could not be fetched;
	// the token may well be good. Callers answer 503, not 401.
	ReasonIssuerUnavailable Reason = "issuer_unavailable"
)

// Reasons lists every Reason, for metrics initialisation and docs.
func Reasons() []Reason {
	return []Reason{ReasonMalformed, ReasonAlgorithm, ReasonUnknownIssuer, ReasonBadSignature, ReasonUnknownKey, ReasonExpired,
		ReasonNotYetValid, ReasonWrongAudience, ReasonInvalidIdentity, ReasonGroupsOverage, ReasonIssuerUnavailable}
}

// Error is a refused token. Its message never contains the token.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("token rejected (%s): %v", e.Reason, e.Err) }

func (e *Error) Unwrap() error { return e.Err }

func refuse(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the Reason of a *Error in err's chain, or "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// ErrNotEntra means the bearer token is not a JWT of an Entra-shaped issuer
// (a service-account token, an opaque token): not this package's to judge.
var ErrNotEntra = errors.New("not a token of the configured Entra issuer")
