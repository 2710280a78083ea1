package store

import (
	"path/filepath"
	"testing"
)

func TestBoltConformance(t *testing.T) {
	paths := map[Store]string{}
	open := func(t *testing.T, path string) Store {
		s, err := OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		paths[s] = path
		t.Cleanup(func() { s.Close() })
		return s
	}
	conformance(t, fixture{
		open: func(t *testing.T) Store { return open(t, filepath.Join(t.TempDir(), "relay.db")) },
		reopen: func(t *testing.T, s Store) Store {
			s.Close()
			return open(t, paths[s])
		},
		leftover: func(t *testing.T, s Store, a *RoleAssignment) {
			if err := put(s.(*Bolt).db, assignBucket, a.ID, a); err != nil {
				t.Fatal(err)
			}
		},
	})
}
