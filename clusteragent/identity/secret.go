package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity/wire"
)

// What marks the Secret as this package's, and whose identity it holds.
const (
	ManagedByLabel    = "app.kubernetes.io/managed-by"
	ManagedByValue    = "clusterconnect"
	ClusterAnnotation = "clusterconnect.io/cluster"
	// NotAfterAnnotation repeats the certificate's expiry (RFC 3339) for
	// kubectl users; it is informative only.
	NotAfterAnnotation = "clusterconnect.io/not-after"
	// TokenHashAnnotation is the SHA-256 (hex) of the registration token the
	// identity was enrolled with: a different token in the token file means
	// the operator re-registers the cluster.
	TokenHashAnnotation = "clusterconnect.io/registration-token-sha256"
)

// Keys of the Secret's data (those of a kubernetes.io/tls Secret).
const (
	keyCert = corev1.TLSCertKey       // tls.crt: leaf [+ intermediates]
	keyKey  = corev1.TLSPrivateKeyKey // tls.key: PKCS#8 (or SEC 1) PEM
	keyCA   = "ca.crt"                // the relay's CA bundle
)

func managed(s *corev1.Secret) bool { return s.Labels[ManagedByLabel] == ManagedByValue }

// parseSecret reads an identity out of a managed Secret, checking it is for
// cluster and that certificate and key belong together.
func parseSecret(s *corev1.Secret, cluster string) (*tls.Certificate, []byte, error) {
	if got := s.Annotations[ClusterAnnotation]; got != cluster {
		if got == "" {
			return nil, nil, fmt.Errorf("it has no %s annotation", ClusterAnnotation)
		}
		return nil, nil, fmt.Errorf("it holds the identity of cluster %q, not %q", got, cluster)
	}
	if len(s.Data[keyCert]) == 0 || len(s.Data[keyKey]) == 0 {
		return nil, nil, fmt.Errorf("it lacks %s or %s", keyCert, keyKey)
	}
	pair, err := tls.X509KeyPair(s.Data[keyCert], s.Data[keyKey])
	if err != nil {
		return nil, nil, fmt.Errorf("%s and %s: %w", keyCert, keyKey, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyCert, err)
		}
	}
	ca := s.Data[keyCA]
	if len(ca) > 0 {
		if _, err := wire.ParseCertificates(ca); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyCA, err)
		}
	}
	return &pair, ca, nil
}

// secretData encodes an identity as the Secret's data.
func secretData(cert *tls.Certificate, caPEM []byte) (map[string][]byte, error) {
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	var crt []byte
	for _, der := range cert.Certificate {
		crt = append(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return map[string][]byte{
		keyCert: crt,
		keyKey:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		keyCA:   caPEM,
	}, nil
}

// errForeignSecret is a Secret of that name that this package did not make:
// it is never overwritten.
func (id *Identity) errForeignSecret() error {
	return fmt.Errorf("identity: Secret %s exists but is not managed by clusterconnect (no label %s=%s): delete it or configure another Secret name",
		id.secretRef(), ManagedByLabel, ManagedByValue)
}

// getSecret reads the Secret; a missing one is (nil, nil). A managed Secret
// read becomes the base of the next store (its resourceVersion).
func (id *Identity) getSecret(ctx context.Context) (*corev1.Secret, error) {
	s, err := id.secrets.Get(ctx, id.secretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		id.setLastSecret(nil)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read Secret %s: %w", id.secretRef(), err)
	}
	if managed(s) {
		id.setLastSecret(s)
	}
	return s, nil
}

// store writes st into the Secret: an update with the resourceVersion last
// read (so it replaces exactly what was read, in one step), or a create if
// there was none. On a conflict it reads the Secret again and retries once.
func (id *Identity) store(ctx context.Context, st *state) error {
	data, err := secretData(st.cert, st.caPEM)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	for try := 0; ; try++ {
		base := id.lastSecretCopy()
		var out *corev1.Secret
		if base == nil {
			out, err = id.secrets.Create(ctx, id.newSecret(nil, data, st), metav1.CreateOptions{})
		} else {
			out, err = id.secrets.Update(ctx, id.newSecret(base, data, st), metav1.UpdateOptions{})
		}
		if err == nil {
			id.setLastSecret(out)
			st.stored.Store(true)
			return nil
		}
		retry := apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || (base != nil && apierrors.IsNotFound(err))
		if !retry || try > 0 {
			return fmt.Errorf("identity: store Secret %s: %w", id.secretRef(), err)
		}
		s, gerr := id.getSecret(ctx)
		if gerr != nil {
			return errors.Join(fmt.Errorf("identity: store Secret %s: %w", id.secretRef(), err), gerr)
		}
		if s != nil && !managed(s) {
			return id.errForeignSecret()
		}
	}
}

// newSecret builds the Secret to write, keeping base's other labels and
// annotations and its resourceVersion.
func (id *Identity) newSecret(base *corev1.Secret, data map[string][]byte, st *state) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: id.secretName, Namespace: id.cfg.Namespace},
		Type:       corev1.SecretTypeTLS,
	}
	if base != nil {
		s.ObjectMeta = *base.ObjectMeta.DeepCopy()
		s.ManagedFields = nil
	}
	s.Labels = maps.Clone(s.Labels)
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[ManagedByLabel] = ManagedByValue
	s.Annotations = maps.Clone(s.Annotations)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[ClusterAnnotation] = id.cfg.Cluster
	s.Annotations[NotAfterAnnotation] = st.notAfter().UTC().Format(time.RFC3339)
	if h := id.getTokenHash(); h != "" {
		s.Annotations[TokenHashAnnotation] = h
	}
	s.Data = data
	return s
}

func (id *Identity) secretRef() string { return id.cfg.Namespace + "/" + id.secretName }

func (id *Identity) setLastSecret(s *corev1.Secret) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.lastSecret = s
}

func (id *Identity) lastSecretCopy() *corev1.Secret {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.lastSecret == nil {
		return nil
	}
	return id.lastSecret.DeepCopy()
}
