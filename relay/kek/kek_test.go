package kek

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const pemKey = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB...\n-----END EC PRIVATE KEY-----\n"

func newKey(t *testing.T, fill byte) *Key {
	t.Helper()
	k, err := New(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := newKey(t, 1)
	for _, plain := range [][]byte{[]byte(pemKey), {}, bytes.Repeat([]byte{0}, 1<<16)} {
		sealed, err := k.Seal(plain)
		if err != nil {
			t.Fatal(err)
		}
		if !IsSealed(sealed) || !strings.HasPrefix(string(sealed), "ccenc1:"+k.ID()+":") {
			t.Fatalf("sealed value %.40q…: want the ccenc1:<id>: prefix", sealed)
		}
		if len(plain) > 0 && bytes.Contains(sealed, plain[:min(len(plain), 16)]) {
			t.Fatal("the plain text shows in the sealed value")
		}
		got, err := k.Open(sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Open = %.40q, %v", got, err)
		}
	}
	// A fresh nonce each time: sealing twice gives two values.
	a, _ := k.Seal([]byte("x"))
	b, _ := k.Seal([]byte("x"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same text are equal")
	}
}

func TestOpenWrongKey(t *testing.T) {
	sealed, _ := newKey(t, 1).Seal([]byte(pemKey))
	_, err := newKey(t, 2).Open(sealed)
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "pass the same --kek-file") {
		t.Fatalf("Open with another key = %v, want ErrWrongKey", err)
	}
}

func TestOpenTampered(t *testing.T) {
	k := newKey(t, 1)
	sealed, _ := k.Seal([]byte(pemKey))
	head := len("ccenc1:") + idLen + 1
	box, err := base64.StdEncoding.DecodeString(string(sealed[head:]))
	if err != nil {
		t.Fatal(err)
	}
	for i := range box { // every byte: nonce, ciphertext and tag
		bad := bytes.Clone(box)
		bad[i] ^= 0x01
		v := append(bytes.Clone(sealed[:head]), base64.StdEncoding.EncodeToString(bad)...)
		if _, err := k.Open(v); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: Open = %v, want ErrCorrupt", i, err)
		}
	}
	for _, v := range []string{
		string(sealed[:len(sealed)-4]),                           // truncated
		string(sealed[:head]) + "!!",                             // not base64
		string(sealed[:head]) + "AAAA",                           // too short
		string(sealed[:head+8]) + "\n" + string(sealed[head+8:]), // a line break base64 would skip
		string(sealed) + "\n",
		"ccenc1:nokeyid",
		"ccenc2:" + string(sealed[len("ccenc1:"):]), // unknown version
		pemKey, // legacy plain text
	} {
		if _, err := k.Open([]byte(v)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open(%.30q) = %v, want ErrCorrupt", v, err)
		}
	}
}

func TestIsSealed(t *testing.T) {
	sealed, _ := newKey(t, 1).Seal([]byte(pemKey))
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{sealed, true},
		{[]byte(pemKey), false},
		{nil, false},
		{[]byte("ccenc1"), false},
		{[]byte("ccenc2:x"), false},
	} {
		if got := IsSealed(tc.b); got != tc.want {
			t.Errorf("IsSealed(%.20q) = %v", tc.b, got)
		}
	}
}

func TestLoad(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, KeySize)
	want := newKey(t, 7).ID()
	dir := t.TempDir()
	for _, text := range []string{
		base64.StdEncoding.EncodeToString(raw) + "\n",
		base64.RawURLEncoding.EncodeToString(raw),
		"  " + hex.EncodeToString(raw) + "\r\n",
		strings.ToUpper(hex.EncodeToString(raw)),
	} {
		t.Setenv("TEST_KEK", text)
		if k, err := Load("", "TEST_KEK"); err != nil || k.ID() != want {
			t.Errorf("Load($TEST_KEK=%q) = %v, %v", text, k, err)
		}
		t.Setenv("TEST_KEK", "")
		f := filepath.Join(dir, "kek")
		os.WriteFile(f, []byte(text), 0o600)
		if k, err := Load(f, ""); err != nil || k.ID() != want {
			t.Errorf("Load(file with %q) = %v, %v", text, k, err)
		}
	}
	for _, bad := range []string{"short", base64.StdEncoding.EncodeToString(raw[:16]), hex.EncodeToString(raw[:31]) + "zz"} {
		t.Setenv("TEST_KEK", bad)
		if _, err := Load("", "TEST_KEK"); err == nil || !strings.Contains(err.Error(), "32 bytes") || !strings.Contains(err.Error(), "$TEST_KEK") {
			t.Errorf("Load($TEST_KEK=%q) = %v, want an error that names the variable and says what a key looks like", bad, err)
		}
	}
	t.Setenv("TEST_KEK", "")
	if _, err := Load("", ""); !errors.Is(err, ErrNoKey) {
		t.Errorf("Load with nothing = %v, want ErrNoKey", err)
	}
	if _, err := Load("", "TEST_KEK"); !errors.Is(err, ErrNoKey) {
		t.Errorf("Load with an empty variable = %v, want ErrNoKey", err)
	}
	// A file, and a variable named but empty: the file.
	if _, err := Load(filepath.Join(dir, "kek"), "TEST_KEK"); err != nil {
		t.Errorf("Load(file, unset variable) = %v", err)
	}
	t.Setenv("TEST_KEK", hex.EncodeToString(raw))
	if _, err := Load(filepath.Join(dir, "kek"), "TEST_KEK"); err == nil {
		t.Error("Load with a file and a set variable: no error")
	}
	if _, err := Load(filepath.Join(dir, "missing"), ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file = %v", err)
	}
}

func TestLoadRefusesLooseModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	f := filepath.Join(t.TempDir(), "kek")
	if err := Generate(f); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true}, {0o440, true},
		{0o644, false}, {0o604, false}, {0o660, false}, {0o602, false}, {0o666, false},
	} {
		if err := os.Chmod(f, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(f, "")
		if (err == nil) != tc.ok {
			t.Errorf("mode %04o: Load = %v, want ok=%v", tc.mode, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v does not say how to fix it", tc.mode, err)
		}
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "kek")
	if err := Generate(f); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(f); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Fatalf("generated key file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	k, err := Load(f, "")
	if err != nil {
		t.Fatal(err)
	}
	// Never replaces a key: what it sealed must stay readable.
	sealed, _ := k.Seal([]byte(pemKey))
	if err := Generate(f); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Generate over an existing key = %v, want fs.ErrExist", err)
	}
	again, err := Load(f, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Open(sealed); err != nil {
		t.Fatalf("the key changed: %v", err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("temporary files left: %v", es)
	}
	// Two generated keys differ.
	g := filepath.Join(dir, "kek2")
	if err := Generate(g); err != nil {
		t.Fatal(err)
	}
	if k2, _ := Load(g, ""); k2 == nil || k2.ID() == k.ID() {
		t.Fatal("two generated keys are the same")
	}
}

// FuzzOpen: Open never panics, and nothing but the sealed value itself (in
// its one strict encoding) opens.
func FuzzOpen(f *testing.F) {
	k, _ := New(bytes.Repeat([]byte{1}, KeySize))
	sealed, _ := k.Seal([]byte(pemKey))
	f.Add(sealed)
	f.Add([]byte(pemKey))
	f.Add([]byte("ccenc1:" + k.ID() + ":"))
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, err := k.Open(b)
		if err != nil {
			return
		}
		// Workers run this body anew, each with its own sealed value.
		if !bytes.Equal(plain, []byte(pemKey)) {
			t.Fatalf("%q opened to %q", b, plain)
		}
		body := b[len("ccenc1:")+idLen+1:]
		if box, _ := base64.StdEncoding.DecodeString(string(body)); base64.StdEncoding.EncodeToString(box) != string(body) {
			t.Fatalf("%q opened though its encoding is not the strict one", b)
		}
	})
}
