package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A migration moves the schema from version i to i+1 (its index + 1).
// Migrations run in order inside one transaction each; never edit one that
// has shipped, append a new one.
type migration struct {
	name string
	fn   func(root *bolt.Bucket) error
}

var migrations = []migration{
	{"v1: meta, keys, key_versions, users", createBuckets(BucketMeta, BucketKeys, BucketKeyVersions, BucketUsers)},
	{"v2: credentials, custodian, client_shares, jobs, blocked", createBuckets(BucketCredentials, BucketCustodian, BucketClientShares, BucketJobs, BucketBlocked)},
}

// SchemaVersion is the schema this build writes.
func SchemaVersion() uint64 { return uint64(len(migrations)) }

func createBuckets(names ...Bucket) func(*bolt.Bucket) error {
	return func(root *bolt.Bucket) error {
		for _, n := range names {
			if _, err := root.CreateBucketIfNotExists([]byte(n)); err != nil {
				return fmt.Errorf("create bucket %s: %w", n, err)
			}
		}
		return nil
	}
}

var schemaKey = []byte("schema")

func schemaOf(root *bolt.Bucket) (uint64, error) {
	v := root.Get(schemaKey)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("schema version is %d bytes, want 8: not a keywarden store or damaged", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// migrate brings the file to SchemaVersion, one transaction per step, and
// refuses a file written by a newer build.
func migrate(db *bolt.DB) error {
	return migrateTo(db, len(migrations))
}

func migrateTo(db *bolt.DB, target int) error {
	for {
		done := false
		err := db.Update(func(tx *bolt.Tx) error {
			root, err := tx.CreateBucketIfNotExists(rootBucket)
			if err != nil {
				return err
			}
			cur, err := schemaOf(root)
			if err != nil {
				return err
			}
			if cur > uint64(len(migrations)) {
				return fmt.Errorf("schema version %d is newer than this build understands (%d): run a newer keywarden", cur, len(migrations))
			}
			if cur >= uint64(target) {
				done = true
				return nil
			}
			m := migrations[cur]
			if err := m.fn(root); err != nil {
				return fmt.Errorf("migration %q: %w", m.name, err)
			}
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], cur+1)
			return root.Put(schemaKey, b[:])
		})
		if err != nil || done {
			return err
		}
	}
}

func checkSchema(tx *bolt.Tx) error {
	root := tx.Bucket(rootBucket)
	if root == nil {
		return fmt.Errorf("not a keywarden store (no root bucket)")
	}
	cur, err := schemaOf(root)
	if err != nil {
		return err
	}
	if cur != uint64(len(migrations)) {
		return fmt.Errorf("schema version %d, this build needs %d: open it read-write once to migrate", cur, len(migrations))
	}
	return nil
}
