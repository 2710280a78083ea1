package identity

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeMounted writes an identity into dir the way the kubelet updates a
// mounted Secret: a new directory, then one rename over the link.
func writeMounted(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	data, err := os.MkdirTemp(dir, "..data-")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(data, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "..data.tmp")
	if err := os.Symlink(filepath.Base(data), link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), p); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestMountedIdentityFollowsTheSecret(t *testing.T) {
	dir := t.TempDir()
	id, err := NewMounted(MountedConfig{Dir: dir, Cluster: "prod-eu", PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Nothing mounted yet (the identity role has not enrolled): it waits,
	// and gives up only when its context ends.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	err = id.WaitMounted(short)
	cancelShort()
	if err == nil || !strings.Contains(err.Error(), "not there yet") {
		t.Fatalf("WaitMounted without files = %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- id.WaitMounted(ctx) }()
	cert1, key1 := selfSigned(t, "prod-eu")
	writeMounted(t, dir, map[string][]byte{keyCert: cert1, keyKey: key1})
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	first := id.Certificate()
	if first == nil || first.Leaf.Subject.CommonName != "prod-eu" {
		t.Fatalf("certificate %v", first)
	}

	follow, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); id.FollowMounted(follow) }()
	defer func() { stop(); <-done }()

	// A broken update (key of another certificate) keeps the current one:
	// the reads FollowMounted does fail, and nothing rotates.
	_, otherKey := selfSigned(t, "prod-eu")
	cert2, key2 := selfSigned(t, "prod-eu")
	writeMounted(t, dir, map[string][]byte{keyCert: cert2, keyKey: otherKey})
	if _, err := id.loadMounted(); err == nil {
		t.Fatal("a certificate with another key was accepted")
	}
	select {
	case <-id.Rotated():
		t.Fatal("a broken update rotated the certificate")
	case <-time.After(5 * 20 * time.Millisecond): // several FollowMounted polls
	}
	if id.Certificate() != first {
		t.Fatal("a broken update replaced the certificate")
	}
	// The identity role's renewal: the new certificate becomes current and
	// Rotated signals.
	writeMounted(t, dir, map[string][]byte{keyCert: cert2, keyKey: key2})
	select {
	case <-id.Rotated():
	case <-ctx.Done():
		t.Fatal("no rotation after the Secret changed")
	}
	if got := id.Certificate(); got == first || string(got.Certificate[0]) == string(first.Certificate[0]) {
		t.Fatal("certificate not replaced")
	}
	// TLSConfig presents the current certificate on every handshake.
	cc, err := id.TLSConfig().GetClientCertificate(nil)
	if err != nil || cc != id.Certificate() {
		t.Fatalf("client certificate %v, %v", cc, err)
	}
}

func TestMountedIdentityOfAnotherCluster(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, "staging")
	writeMounted(t, dir, map[string][]byte{keyCert: cert, keyKey: key})
	id, err := NewMounted(MountedConfig{Dir: dir, Cluster: "prod-eu"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.loadMounted(); err == nil || !strings.Contains(err.Error(), `cluster "staging", not "prod-eu"`) {
		t.Fatalf("another cluster's certificate: %v", err)
	}
	if _, err := NewMounted(MountedConfig{Cluster: "x"}); err == nil {
		t.Fatal("no directory accepted")
	}
}
