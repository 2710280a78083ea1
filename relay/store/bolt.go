package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	clustersBucket = []byte("clusters")
	metaBucket     = []byte("meta")
	rolesBucket    = []byte("roles")
	assignBucket   = []byte("roleassignments")
	tokensBucket   = []byte("apitokens")
	caKey          = []byte("cluster-ca")
)

// Bolt is a Store in a local bbolt file, for a single relay.
type Bolt struct{ db *bolt.DB }

// OpenBolt opens (creating if needed) the store file at path. Only one
// process may hold it; a second relay on the same file fails after a few
// seconds with an error that says so.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 3 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s (is another relay using it?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{clustersBucket, rolesBucket, assignBucket, tokensBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		_, err := tx.CreateBucketIfNotExists(metaBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

func (b *Bolt) CreateCluster(_ context.Context, c *Cluster) error {
	c.Version = 1
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(clustersBucket)
		if bk.Get([]byte(c.Name)) != nil {
			return fmt.Errorf("cluster %q: %w", c.Name, ErrExists)
		}
		if _, err := deleteWhere(tx, assignBucket, func(a *RoleAssignment) bool { return a.Cluster == c.Name }); err != nil {
			return err
		}
		return bk.Put([]byte(c.Name), v)
	})
}

func (b *Bolt) GetCluster(_ context.Context, name string) (*Cluster, error) {
	var c Cluster
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(clustersBucket).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("cluster %q: %w", name, ErrNotFound)
		}
		return json.Unmarshal(v, &c)
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func (b *Bolt) ListClusters(_ context.Context) ([]*Cluster, error) {
	var out []*Cluster
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(clustersBucket).ForEach(func(_, v []byte) error {
			var c Cluster
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			out = append(out, &c)
			return nil
		})
	})
	return out, err
}

func (b *Bolt) UpdateCluster(_ context.Context, name string, update func(*Cluster) error) (*Cluster, error) {
	var c Cluster
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(clustersBucket)
		v := bk.Get([]byte(name))
		if v == nil {
			return fmt.Errorf("cluster %q: %w", name, ErrNotFound)
		}
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		if err := update(&c); err != nil {
			return err
		}
		c.Name = name
		c.Version++
		nv, err := json.Marshal(&c)
		if err != nil {
			return err
		}
		return bk.Put([]byte(name), nv)
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func (b *Bolt) InitCA(_ context.Context, ca *CA) (*CA, error) {
	var out CA
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(metaBucket)
		if v := bk.Get(caKey); v != nil {
			return json.Unmarshal(v, &out)
		}
		v, err := json.Marshal(ca)
		if err != nil {
			return err
		}
		out = *ca
		return bk.Put(caKey, v)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (b *Bolt) DeleteCluster(_ context.Context, name string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(clustersBucket)
		if bk.Get([]byte(name)) == nil {
			return fmt.Errorf("cluster %q: %w", name, ErrNotFound)
		}
		if _, err := deleteWhere(tx, assignBucket, func(a *RoleAssignment) bool { return a.Cluster == name }); err != nil {
			return err
		}
		return bk.Delete([]byte(name))
	})
}

func (b *Bolt) Close() error { return b.db.Close() }

// deleteWhere deletes, within tx, the values of bucket that match and
// returns them.
func deleteWhere[T any](tx *bolt.Tx, bucket []byte, match func(*T) bool) ([]*T, error) {
	bk := tx.Bucket(bucket)
	var keys [][]byte
	var out []*T
	// Keys are collected first: a bucket must not change under ForEach.
	err := bk.ForEach(func(k, b []byte) error {
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return err
		}
		if match(v) {
			keys = append(keys, k)
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := bk.Delete(k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// create stores v under a new key (ErrExists when it is taken); check, when
// set, runs first in the same transaction.
func create(db *bolt.DB, bucket []byte, key, what string, v any, check func(*bolt.Tx) error) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		bk := tx.Bucket(bucket)
		if bk.Get([]byte(key)) != nil {
			return fmt.Errorf("%s %q: %w", what, key, ErrExists)
		}
		return bk.Put([]byte(key), b)
	})
}

func put(db *bolt.DB, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(key), b) })
}

func get(db *bolt.DB, bucket []byte, key, what string, v any) error {
	return db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket).Get([]byte(key))
		if b == nil {
			return fmt.Errorf("%s %q: %w", what, key, ErrNotFound)
		}
		return json.Unmarshal(b, v)
	})
}

func del(db *bolt.DB, bucket []byte, key, what string) error {
	return db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk.Get([]byte(key)) == nil {
			return fmt.Errorf("%s %q: %w", what, key, ErrNotFound)
		}
		return bk.Delete([]byte(key))
	})
}

func list[T any](db *bolt.DB, bucket []byte, keep func(*T) bool) ([]*T, error) {
	var out []*T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, b []byte) error {
			v := new(T)
			if err := json.Unmarshal(b, v); err != nil {
				return err
			}
			if keep == nil || keep(v) {
				out = append(out, v)
			}
			return nil
		})
	})
	return out, err
}

func (b *Bolt) PutRole(_ context.Context, r *RoleDefinition) error {
	return put(b.db, rolesBucket, r.Name, r)
}

func (b *Bolt) GetRole(_ context.Context, name string) (*RoleDefinition, error) {
	var r RoleDefinition
	if err := get(b.db, rolesBucket, name, "role", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (b *Bolt) ListRoles(context.Context) ([]*RoleDefinition, error) {
	return list[RoleDefinition](b.db, rolesBucket, nil)
}

func (b *Bolt) DeleteRole(_ context.Context, name string) error {
	return del(b.db, rolesBucket, name, "role")
}

func (b *Bolt) CreateAssignment(_ context.Context, a *RoleAssignment) error {
	return create(b.db, assignBucket, a.ID, "role assignment", a, func(tx *bolt.Tx) error {
		if a.Cluster != "" && tx.Bucket(clustersBucket).Get([]byte(a.Cluster)) == nil {
			return fmt.Errorf("cluster %q: %w", a.Cluster, ErrNotFound)
		}
		return nil
	})
}

func (b *Bolt) DeleteAssignment(_ context.Context, id string) error {
	return del(b.db, assignBucket, id, "role assignment")
}

func (b *Bolt) ListAssignments(_ context.Context, cluster string) ([]*RoleAssignment, error) {
	return list(b.db, assignBucket, func(a *RoleAssignment) bool { return cluster == "" || a.Cluster == cluster })
}

func (b *Bolt) DeleteExpiredAssignments(_ context.Context, now time.Time) ([]*RoleAssignment, error) {
	var out []*RoleAssignment
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		out, err = deleteWhere(tx, assignBucket, func(a *RoleAssignment) bool { return a.Expired(now) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (b *Bolt) CreateToken(_ context.Context, t *APIToken) error {
	return create(b.db, tokensBucket, t.ID, "API token", t, nil)
}

func (b *Bolt) GetToken(_ context.Context, id string) (*APIToken, error) {
	var t APIToken
	if err := get(b.db, tokensBucket, id, "API token", &t); err != nil {
		return nil, err
	}
	return &t, nil
}

func (b *Bolt) ListTokens(context.Context) ([]*APIToken, error) {
	return list[APIToken](b.db, tokensBucket, nil)
}

func (b *Bolt) DeleteToken(_ context.Context, id string) error {
	return del(b.db, tokensBucket, id, "API token")
}

func (b *Bolt) DeleteExpiredTokens(_ context.Context, now time.Time) (int, error) {
	var n int
	err := b.db.Update(func(tx *bolt.Tx) error {
		gone, err := deleteWhere(tx, tokensBucket, func(t *APIToken) bool { return t.Expired(now) })
		n = len(gone)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
