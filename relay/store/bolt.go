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
		if _, err := tx.CreateBucketIfNotExists(clustersBucket); err != nil {
			return err
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
		return bk.Delete([]byte(name))
	})
}

func (b *Bolt) Close() error { return b.db.Close() }
