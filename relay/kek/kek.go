// Package kek seals the relay's secrets at rest (the cluster CA's private
// key, and whatever else the store keeps that must not leak with a copy of
// it) under a key-encryption key that the operator supplies and keeps apart
// from the store: envelope encryption with AES-256-GCM.
//
// A sealed value is text, so that it fits where PEM went before:
//
//	ccenc1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>
//
// "ccenc1" names the format (AES-256-GCM, 12-byte random nonce, the string
// "ccenc1" as additional data). The key id is the first 16 hex digits of
// SHA-256("clusterconnect kek id\x00" ‖ key): it tells a wrong key from a
// damaged value, and reveals nothing usable about the key. Anything without
// the "ccenc1:" prefix (a PEM block written before sealing existed) is
// legacy plain text: see IsSealed.
//
// The key itself is 32 random bytes written as base64 (standard or URL
// alphabet, padded or not) or as 64 hex digits, in a file or an environment
// variable; Generate writes a new one.
package kek

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/clusterconnect/clusterconnect/relay/secret"
)

// KeySize is the size of a key-encryption key in bytes (AES-256).
const KeySize = 32

const (
	version = "ccenc1"
	prefix  = version + ":"
	idLen   = 16 // hex digits of the key id
)

var (
	// ErrNoKey: Load was given neither a file nor a value.
	ErrNoKey = errors.New("no key-encryption key configured")
	// ErrWrongKey: the value was sealed under another key.
	ErrWrongKey = errors.New("the key-encryption key does not match the one the store was sealed with: pass the same --kek-file")
	// ErrCorrupt: the value is not a sealed value, or was damaged or
	// tampered with after sealing.
	ErrCorrupt = errors.New("sealed value is damaged or was tampered with")
)

// Key is a key-encryption key. It is safe for concurrent use.
type Key struct {
	aead cipher.AEAD
	id   string
}

// New returns the Key of 32 raw bytes.
func New(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("key-encryption key is %d bytes, want %d", len(raw), KeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("clusterconnect kek id\x00"), raw...))
	return &Key{aead: aead, id: hex.EncodeToString(sum[:])[:idLen]}, nil
}

// Load reads the key from file or, when file is empty, from the
// environment variable named env (its name, e.g. "RELAY_KEK", not its
// value). A file and a set variable together are an error, since it would
// be unclear which key sealed the store; neither is ErrNoKey.
//
// A key file must not be readable or writable by others, nor writable by
// its group (mode 0600, 0400, 0640 or 0440): Load refuses a looser one
// rather than warn, since a key anyone on the host can read protects
// nothing. Group read is allowed for Kubernetes Secret volumes with an
// fsGroup; their default mode, 0644, is refused (set defaultMode: 0400).
// Windows has no such modes and is not checked.
func Load(file, env string) (*Key, error) {
	var value string
	if env != "" {
		value = os.Getenv(env)
	}
	var text, from string
	switch {
	case file != "" && value != "":
		return nil, fmt.Errorf("key-encryption key: both a key file (%s) and $%s are set; give one", file, env)
	case file != "":
		fi, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o027 != 0 {
			return nil, fmt.Errorf("key-encryption key file %s has mode %04o: others (and the group, for writing) must have no access; chmod 600 %s", file, perm, file)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		text, from = string(b), "file "+file
	case value != "":
		text, from = value, "$"+env
	default:
		return nil, ErrNoKey
	}
	raw, err := decode(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("key-encryption key from %s: %w", from, err)
	}
	return New(raw)
}

// decode reads 64 hex digits or base64 of 32 bytes.
func decode(s string) ([]byte, error) {
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return b, nil
		}
	}
	return nil, fmt.Errorf("want %d bytes as base64 or %d hex digits (e.g. the output of `openssl rand -base64 32`)", KeySize, 2*KeySize)
}

// Generate writes a new random key, base64, to path with mode 0600. It
// never replaces a key (that would make everything sealed under it
// unreadable): when path exists it fails with an error matching
// fs.ErrExist. The file appears whole or not at all.
func Generate(path string) error {
	raw := make([]byte, KeySize)
	rand.Read(raw)
	data := []byte(base64.StdEncoding.EncodeToString(raw) + "\n")
	return secret.CreateFileAtomic(path, data, 0o600)
}

// ID is the key's id as sealed values carry it, for logs.
func (k *Key) ID() string { return k.id }

// IsSealed reports whether b is a sealed value rather than legacy plain
// text.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, []byte(prefix)) }

// Seal encrypts plain under a fresh random nonce.
func (k *Key) Seal(plain []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	box := k.aead.Seal(nonce, nonce, plain, []byte(version))
	out := make([]byte, 0, len(prefix)+idLen+1+base64.StdEncoding.EncodedLen(len(box)))
	out = append(out, prefix...)
	out = append(out, k.id...)
	out = append(out, ':')
	return base64.StdEncoding.AppendEncode(out, box), nil
}

// Open decrypts a value Seal made: ErrWrongKey when another key sealed it,
// ErrCorrupt when it is not a sealed value or was changed.
func (k *Key) Open(sealed []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(sealed, []byte(prefix))
	if !ok {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrCorrupt, prefix)
	}
	id, body, ok := bytes.Cut(rest, []byte(":"))
	if !ok || len(id) != idLen {
		return nil, fmt.Errorf("%w: no key id", ErrCorrupt)
	}
	if string(id) != k.id {
		return nil, fmt.Errorf("%w (sealed under key %s, this key is %s)", ErrWrongKey, id, k.id)
	}
	// Strict, and without the line breaks base64 would skip: one value has
	// one encoding.
	box, err := base64.StdEncoding.Strict().AppendDecode(nil, body)
	if err != nil || bytes.ContainsAny(body, "\r\n") || len(box) < k.aead.NonceSize()+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: bad encoding", ErrCorrupt)
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, box[:n], box[n:], []byte(version))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	return plain, nil
}
