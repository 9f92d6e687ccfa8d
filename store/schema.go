package store

import (
	"context"
	"fmt"
	"sort"
)

// Bucket names a bucket (see the package doc for what each holds).
type Bucket string

// The buckets. Each is created by the migration that introduced it.
const (
	BucketMeta         Bucket = "meta"
	BucketKeys         Bucket = "keys"
	BucketKeyVersions  Bucket = "key_versions"
	BucketUsers        Bucket = "users"
	BucketCredentials  Bucket = "credentials"
	BucketCustodian    Bucket = "custodian"
	BucketClientShares Bucket = "client_shares"
	BucketJobs         Bucket = "jobs"
	BucketBlocked      Bucket = "blocked"
	BucketPIN          Bucket = "pin"
	BucketClusterJoins Bucket = "cluster_joins"
)

// A migration moves the schema from version i to i+1 (its index + 1).
// Migrations are written against [BackendTx], so every backend runs the
// same ones; they run in order at open, one Update each. Never edit one
// that has shipped: append a new one.
type migration struct {
	name    string
	creates []Bucket              // buckets this step creates
	fn      func(BackendTx) error // optional: a data change after the buckets exist
}

var migrations = []migration{
	{name: "v1: meta, keys, key_versions, users", creates: []Bucket{BucketMeta, BucketKeys, BucketKeyVersions, BucketUsers}},
	{name: "v2: credentials, custodian, client_shares, jobs, blocked", creates: []Bucket{BucketCredentials, BucketCustodian, BucketClientShares, BucketJobs, BucketBlocked}},
	{name: "v3: pin", creates: []Bucket{BucketPIN}},
	{name: "v4: cluster_joins", creates: []Bucket{BucketClusterJoins}},
}

// SchemaVersion is the schema this build writes.
func SchemaVersion() uint64 { return uint64(len(migrations)) }

// Buckets returns every bucket of the current schema, in byte order of
// the names (for a tool that walks or copies the whole store).
func Buckets() []Bucket {
	var bs []Bucket
	for _, m := range migrations {
		bs = append(bs, m.creates...)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i] < bs[j] })
	return bs
}

// migrate brings the backend to SchemaVersion, one transaction per step,
// and refuses a store written by a newer build.
func migrate(ctx context.Context, b Backend) error {
	return migrateTo(ctx, b, len(migrations))
}

func migrateTo(ctx context.Context, b Backend, target int) error {
	for {
		done := false
		err := b.Update(ctx, func(tx BackendTx) error {
			done = false
			cur, err := tx.SchemaVersion()
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
			for _, bk := range m.creates {
				if err := tx.CreateBucket(bk); err != nil {
					return fmt.Errorf("migration %q: %w", m.name, err)
				}
			}
			if m.fn != nil {
				if err := m.fn(tx); err != nil {
					return fmt.Errorf("migration %q: %w", m.name, err)
				}
			}
			return tx.SetSchemaVersion(cur + 1)
		})
		if err != nil || done {
			return err
		}
	}
}

// checkSchema refuses (for a read-only open) a store that is not at this
// build's schema version.
func checkSchema(ctx context.Context, b Backend) error {
	return b.View(ctx, func(tx BackendTx) error {
		cur, err := tx.SchemaVersion()
		if err != nil {
			return err
		}
		if cur == 0 {
			return fmt.Errorf("not a keywarden store (no schema version)")
		}
		if cur != uint64(len(migrations)) {
			return fmt.Errorf("schema version %d, this build needs %d: open it read-write once to migrate", cur, len(migrations))
		}
		return nil
	})
}
