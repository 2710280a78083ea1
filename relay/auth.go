package relay

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/clusterconnect/clusterconnect/relay/store"
)

// AgentAuthenticator decides whether an agent's tunnel request speaks for the
// cluster it names. It runs once per tunnel connection, never per stream, so
// replacing the interim secret with an mTLS identity does not touch the hot
// path.
type AgentAuthenticator interface {
	AuthenticateAgent(ctx context.Context, r *http.Request, c *store.Cluster) error
}

// ErrUnauthenticated is wrapped by authentication failures.
var ErrUnauthenticated = errors.New("unauthenticated")

// SecretAuthenticator checks the per-cluster secret the relay generated at
// registration, sent as "Authorization: Bearer <secret>".
type SecretAuthenticator struct{}

// AuthenticateAgent implements AgentAuthenticator.
func (SecretAuthenticator) AuthenticateAgent(_ context.Context, r *http.Request, c *store.Cluster) error {
	secret, ok := bearer(r)
	if !ok {
		return errors.Join(ErrUnauthenticated, errors.New("no agent secret: send it as Authorization: Bearer <secret>"))
	}
	if !secretMatches(secret, c.AgentSecretHash) {
		return errors.Join(ErrUnauthenticated, errors.New("agent secret does not match the one issued for cluster "+c.Name+"; use the secret printed by `connectctl clusters create`"))
	}
	return nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func secretMatches(secret, wantHash string) bool {
	return subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(wantHash)) == 1
}
