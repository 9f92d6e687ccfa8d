package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
)

// TestImportClaimMark: a key put with a claim deadline carries the mark in
// its record (the binary form's claim flag and deadline), beside the sealed value, which is unchanged by a
// claim; ClaimKeyTx clears it before the deadline and refuses after it or
// without a mark; a put without a deadline clears it, and an overwrite
// with a deadline over a key without a mark (claimed, or never imported)
// does not set one.
func TestImportClaimMark(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCustody(db, testRoot(t), CustodyOptions{Clock: func() time.Time { return now }})
	o := UserOwner("alice")
	deadline := now.Add(30 * 24 * time.Hour)
	// raw reads the stored record and reports whether its flags byte
	// carries the claim mark.
	raw := func() (rec keyRecord, marked bool) {
		t.Helper()
		err := db.View(ctx, func(tx *store.Tx) error {
			b, err := tx.Get(store.BucketKeys, store.Key(string(o), "PASSKEY"))
			if err != nil {
				return err
			}
			if len(b) < 2 || b[0] != keyRecordV1 {
				t.Fatalf("the record is not binary: % x", b[:min(len(b), 4)])
			}
			marked = b[1]&recFlagClaimBy != 0
			rec, err = decodeKeyRecord(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return rec, marked
	}
	claim := func() error {
		return db.Update(ctx, func(tx *store.Tx) error { return c.ClaimKeyTx(tx, o, "PASSKEY", now) })
	}

	if _, err := c.PutKey(ctx, o, "PASSKEY", []byte("imported"), PutOptions{NoOverwrite: true, ClaimDeadline: deadline}); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx, o, "PASSKEY")
	if err != nil || info.ClaimDeadline == nil || !info.ClaimDeadline.Equal(deadline) {
		t.Fatalf("info of an imported key: %+v %v", info, err)
	}
	before, marked := raw()
	if !marked || before.ClaimBy == nil || !before.ClaimBy.Equal(deadline) {
		t.Fatalf("the mark is not stored: %v %v", marked, before.ClaimBy)
	}
	// After the deadline: refused, the mark stays (a new import renews it).
	saved := now
	now = deadline
	if err := claim(); !errors.Is(err, ErrClaimExpired) {
		t.Fatalf("claim at the deadline: %v", err)
	}
	now = saved.Add(time.Hour)
	if err := claim(); err != nil {
		t.Fatalf("claim: %v", err)
	}
	after, marked := raw()
	if marked || after.ClaimBy != nil {
		t.Fatalf("the mark after a claim: %v %v", marked, after.ClaimBy)
	}
	if !bytes.Equal(after.Sealed, before.Sealed) || after.Format != before.Format || !after.Created.Equal(before.Created) {
		t.Fatal("a claim changed the sealed record")
	}
	if k, err := c.GetKey(ctx, o, "PASSKEY"); err != nil || string(k.Reveal()) != "imported" {
		t.Fatalf("key after the claim: %v", err)
	}
	if err := claim(); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("second claim: %v", err)
	}
	// An overwrite with a deadline over a claimed key keeps it claimed.
	if _, err := c.PutKey(ctx, o, "PASSKEY", []byte("re-imported"), PutOptions{ClaimDeadline: deadline}); err != nil {
		t.Fatal(err)
	}
	if info, _ := c.Info(ctx, o, "PASSKEY"); info.ClaimDeadline != nil {
		t.Fatalf("overwrite of a claimed key set a mark: %+v", info)
	}
	// A key with no record at all: nothing to claim.
	if err := db.Update(ctx, func(tx *store.Tx) error { return c.ClaimKeyTx(tx, UserOwner("nobody"), "PASSKEY", now) }); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim of no key: %v", err)
	}

	// Over a key still unclaimed, an overwrite with a deadline renews it and
	// one without clears it.
	b := UserOwner("bob")
	c.PutKey(ctx, b, "PASSKEY", []byte("one"), PutOptions{ClaimDeadline: deadline})
	c.PutKey(ctx, b, "PASSKEY", []byte("two"), PutOptions{ClaimDeadline: deadline.Add(time.Hour)})
	if info, _ := c.Info(ctx, b, "PASSKEY"); info.ClaimDeadline == nil || !info.ClaimDeadline.Equal(deadline.Add(time.Hour)) {
		t.Fatalf("re-import of an unclaimed key: %+v", info)
	}
	c.PutKey(ctx, b, "PASSKEY", []byte("three"), PutOptions{})
	if info, _ := c.Info(ctx, b, "PASSKEY"); info.ClaimDeadline != nil {
		t.Fatalf("a put without a deadline kept the mark: %+v", info)
	}
}

// TestKeyRecordWithoutClaimMark: records written before the mark existed
// (JSON, no "cb") still read and open, and are not claimable.
func TestKeyRecordWithoutClaimMark(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	root := testRoot(t)
	c := NewCustody(db, root, CustodyOptions{})
	o := UserOwner("old")
	sealed, err := root.Seal(Binding{Kind: "key", Owner: o, Method: "PASSKEY", Version: 1}, []byte("old key"))
	if err != nil {
		t.Fatal(err)
	}
	// The JSON layout of a record as earlier builds wrote it.
	old, _ := json.Marshal(map[string]any{"f": "bytes", "c": "2025-06-01T00:00:00Z", "u": "2025-06-01T00:00:00Z", "s": sealed})
	if err := db.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, store.Key(string(o), "PASSKEY"), old) }); err != nil {
		t.Fatal(err)
	}
	k, info, err := c.Lookup(ctx, o, "PASSKEY")
	if err != nil || string(k.Reveal()) != "old key" || info.ClaimDeadline != nil || info.Version != 1 {
		t.Fatalf("old record: %+v %v", info, err)
	}
	if err := db.Update(ctx, func(tx *store.Tx) error { return c.ClaimKeyTx(tx, o, "PASSKEY", time.Now()) }); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim of an old record: %v", err)
	}
	// A put without a deadline writes a binary record without the mark.
	c.PutKey(ctx, UserOwner("new"), "PASSKEY", []byte("k"), PutOptions{})
	db.View(ctx, func(tx *store.Tx) error {
		b, _ := tx.Get(store.BucketKeys, store.Key("user:new", "PASSKEY"))
		if len(b) < 2 || b[0] != keyRecordV1 || b[1]&recFlagClaimBy != 0 {
			t.Errorf("a record without a mark: % x", b[:min(len(b), 2)])
		}
		return nil
	})
}
