// Package secret makes and checks the relay's bearer secrets: registration
// and admin tokens are random, stored only as SHA-256 hashes, and compared in
// constant time.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
)

// Random returns n random bytes, base64url without padding.
func Random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Hash is the SHA-256 (hex) of secret, the form the store keeps.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Matches reports, in constant time, whether secret hashes to wantHash.
func Matches(secret, wantHash string) bool {
	return subtle.ConstantTimeCompare([]byte(Hash(secret)), []byte(wantHash)) == 1
}

// Bearer returns the request's bearer token.
func Bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}
