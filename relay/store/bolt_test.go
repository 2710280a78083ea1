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
	c := &Cluster{Name: "prod-eu", UID: "u1", CreatedAt: time.Unix(1700000000, 0).UTC(), AgentSecretHash: "abc"}
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
	if err != nil || *got != *c {
		t.Fatalf("get after reopen = %+v, %v; want %+v", got, err, c)
	}
	list, err := s.ListClusters(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %v, %v", list, err)
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
