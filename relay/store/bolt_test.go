package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestBoltClusters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := &Cluster{Name: "prod-eu", UID: "u1", CreatedAt: time.Unix(1700000000, 0).UTC(), RegistrationTokenHash: "abc"}
	if err := s.CreateCluster(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCluster(ctx, c); !errors.Is(err, ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}
	s.Close()

	// State survives a restart.
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetCluster(ctx, "prod-eu")
	if err != nil || got.UID != c.UID || got.RegistrationTokenHash != "abc" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Fatalf("get after reopen = %+v, %v; want %+v", got, err, c)
	}
	list, err := s.ListClusters(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %v, %v", list, err)
	}
	// Updates are read-modify-write; an error aborts.
	if _, err := s.UpdateCluster(ctx, "prod-eu", func(c *Cluster) error { c.RegistrationTokenUsed = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateCluster(ctx, "prod-eu", func(c *Cluster) error { c.CertGeneration = 9; return errors.New("no") }); err == nil {
		t.Fatal("update error not returned")
	}
	if got, _ := s.GetCluster(ctx, "prod-eu"); !got.RegistrationTokenUsed || got.CertGeneration != 0 {
		t.Fatalf("after updates: %+v", got)
	}
	if _, err := s.UpdateCluster(ctx, "nope", func(*Cluster) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a missing cluster = %v", err)
	}
	// The CA is stored once; later InitCA calls return the first.
	first, err := s.InitCA(ctx, &CA{CertPEM: []byte("c1"), KeyPEM: []byte("k1")})
	if err != nil || string(first.CertPEM) != "c1" {
		t.Fatal(first, err)
	}
	if again, _ := s.InitCA(ctx, &CA{CertPEM: []byte("c2")}); string(again.CertPEM) != "c1" {
		t.Fatalf("InitCA replaced the CA: %s", again.CertPEM)
	}
	if err := s.DeleteCluster(ctx, "prod-eu"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCluster(ctx, "prod-eu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteCluster(ctx, "prod-eu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
}
