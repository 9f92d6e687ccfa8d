package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
)

// legacyRecord is a key record as builds before decisions/54 wrote it:
// json.Marshal of keyRecord, its times in UTC, sealed for version 1.
func legacyRecord(t *testing.T, root *Root, kind string, o Owner, method, value string, rec keyRecord) []byte {
	t.Helper()
	var err error
	rec.Sealed, err = root.Seal(Binding{Kind: kind, Owner: o, Method: method, Version: 1}, []byte(value))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != '{' {
		t.Fatalf("legacy record starts with %q", b[0])
	}
	return b
}

// TestLegacyJSONRecordsInMixedStore: JSON records of earlier builds (keys
// and prior versions) release, describe, list and verify beside binary
// ones, are not rewritten by any read, and convert to the binary form when
// next written: an overwrite, a claim, a delete keeping the prior, a
// version restore. A damaged binary record fails the backup check.
func TestLegacyJSONRecordsInMixedStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close() // one simulator per process: the next test waits for it
	db := openDB(t, filepath.Join(dir, "k.db"))
	defer db.Close()
	root, raw, err := Initialize(ctx, sim, db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	c := NewCustody(db, root, CustodyOptions{Clock: func() time.Time { return now }})
	t0 := time.Date(2025, 6, 1, 8, 30, 15, 123456789, time.UTC)
	deadline := now.Add(24 * time.Hour)
	priorID := store.VersionID(now.Add(-24 * time.Hour)) // within the retention
	// The JSON records, by store key.
	legacy := map[string][]byte{
		string(store.Key("user:old", "PASSKEY")):      legacyRecord(t, root, "key", "user:old", "PASSKEY", "old key", keyRecord{Format: FormatBytes, Created: t0, Updated: t0}),
		string(store.Key("user:mixed", "PASSKEY")):    legacyRecord(t, root, "key", "user:mixed", "PASSKEY", "mixed json", keyRecord{Format: FormatBytes, Created: t0, Updated: t0}),
		string(store.Key("portal:c1", "PASSKEY")):     legacyRecord(t, root, "key", "portal:c1", "PASSKEY", "portal text", keyRecord{Format: FormatText, Created: t0, Updated: t0, ClientID: "c1"}),
		string(store.Key("user:imported", "PASSKEY")): legacyRecord(t, root, "key", "user:imported", "PASSKEY", "imported", keyRecord{Format: FormatBytes, Created: t0, Updated: t0, ClaimBy: &deadline}),
		string(store.Key("user:gone", "PASSKEY")):     legacyRecord(t, root, "key", "user:gone", "PASSKEY", "gone key", keyRecord{Format: FormatBytes, Created: t0, Updated: t0}),
	}
	legacyPrior := legacyRecord(t, root, kindPrior, "user:old", "PASSKEY", "older key", keyRecord{Format: FormatBytes, Created: t0.Add(-time.Hour), Updated: t0.Add(-time.Hour)})
	if err := db.Update(ctx, func(tx *store.Tx) error {
		for k, v := range legacy {
			if err := tx.Put(store.BucketKeys, []byte(k), v); err != nil {
				return err
			}
		}
		return tx.Put(store.BucketKeyVersions, store.Key("user:old", "PASSKEY", priorID), legacyPrior)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutKey(ctx, "user:mixed", "PASSWORD", []byte("mixed binary"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func(b store.Bucket, k []byte) []byte {
		t.Helper()
		var v []byte
		if err := db.View(ctx, func(tx *store.Tx) error {
			got, err := tx.Get(b, k)
			v = bytes.Clone(got)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	unchanged := func(when string) {
		t.Helper()
		for k, v := range legacy {
			if got := get(store.BucketKeys, []byte(k)); !bytes.Equal(got, v) {
				t.Fatalf("%s: the JSON record %q was rewritten", when, k)
			}
		}
	}
	binaryAt := func(b store.Bucket, k []byte) {
		t.Helper()
		if v := get(b, k); len(v) == 0 || v[0] != keyRecordV1 {
			t.Fatalf("%s %q is not binary: %.10q", b, k, v)
		}
	}

	// Reads: release, describe, list, versions; nothing is rewritten.
	k, info, err := c.Lookup(ctx, "user:old", "PASSKEY")
	if err != nil || string(k.Reveal()) != "old key" || info.Version != 1 || !info.Created.Equal(t0) {
		t.Fatalf("release of a JSON record: %+v %v", info, err)
	}
	printed, _ := json.Marshal(info)
	if want := `"createdAt":"2025-06-01T08:30:15.123456789Z"`; !strings.Contains(string(printed), want) {
		t.Fatalf("KeyInfo of a JSON record prints %s, want %s", printed, want)
	}
	if k, info, err := c.LookupAs(ctx, "portal:c1", "PASSKEY", Access{ClientID: "c1"}); err != nil || string(k.Reveal()) != "portal text" || info.Format != FormatText || info.ClientID != "c1" {
		t.Fatalf("release of a JSON text record: %+v %v", info, err)
	}
	list, err := c.ListKeys(ctx, "user:mixed")
	if err != nil || len(list) != 2 || list[0].Method != "PASSKEY" || list[1].Method != "PASSWORD" || !list[0].Created.Equal(t0) || !list[1].Created.Equal(now) {
		t.Fatalf("list of a mixed owner: %+v %v", list, err)
	}
	if info, err := c.Info(ctx, "user:imported", "PASSKEY"); err != nil || info.ClaimDeadline == nil || !info.ClaimDeadline.Equal(deadline) {
		t.Fatalf("info of a JSON unclaimed import: %+v %v", info, err)
	}
	vs, err := c.ListVersions(ctx, "user:old", "PASSKEY")
	if err != nil || len(vs) != 1 || vs[0].ID != priorID || !vs[0].Created.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("versions with a JSON prior: %+v %v", vs, err)
	}
	unchanged("after the reads")

	// The backup check decodes both forms and opens every key.
	verify := func(name string, db *store.DB) (BackupReport, error) {
		t.Helper()
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.WriteTo(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		b, err := store.Open(path, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		return VerifyBackup(ctx, sim, b)
	}
	if rep, err := verify("mixed.db", db); err != nil || rep.Keys != 6 {
		t.Fatalf("verify a mixed store: %+v %v", rep, err)
	}
	unchanged("after the backup check")

	// restoresBinaryPrior checks that the one prior version of o, kept from
	// a JSON record, is binary, created at t0, and restores to value.
	restoresBinaryPrior := func(o Owner, value string) {
		t.Helper()
		vs, err := c.ListVersions(ctx, o, "PASSKEY")
		if err != nil || len(vs) != 1 || !vs[0].Created.Equal(t0) {
			t.Fatalf("versions of %s: %+v %v", o, vs, err)
		}
		binaryAt(store.BucketKeyVersions, store.Key(string(o), "PASSKEY", vs[0].ID))
		if err := c.RestoreVersion(ctx, o, "PASSKEY", vs[0].ID); err != nil {
			t.Fatal(err)
		}
		if k, err := c.GetKey(ctx, o, "PASSKEY"); err != nil || string(k.Reveal()) != value {
			t.Fatalf("restore of %s's converted prior: %v", o, err)
		}
	}

	// Writes convert: an overwrite keeps created time and client id.
	if _, err := c.PutKey(ctx, "portal:c1", "PASSKEY", []byte("portal text 2"), PutOptions{Format: FormatText, ClientID: "c1"}); err != nil {
		t.Fatal(err)
	}
	binaryAt(store.BucketKeys, store.Key("portal:c1", "PASSKEY"))
	if k, info, err := c.Lookup(ctx, "portal:c1", "PASSKEY"); err != nil || string(k.Reveal()) != "portal text 2" || info.Version != 2 || !info.Created.Equal(t0) || info.ClientID != "c1" || info.Format != FormatText {
		t.Fatalf("overwritten JSON record: %+v %v", info, err)
	}
	restoresBinaryPrior("portal:c1", "portal text")

	// A claim clears the mark in the binary form; the sealed value stays.
	oldSealed, _ := decodeKeyRecord(legacy[string(store.Key("user:imported", "PASSKEY"))])
	if err := db.Update(ctx, func(tx *store.Tx) error { return c.ClaimKeyTx(tx, "user:imported", "PASSKEY", now) }); err != nil {
		t.Fatal(err)
	}
	claimed := get(store.BucketKeys, store.Key("user:imported", "PASSKEY"))
	if rec, err := decodeKeyRecord(claimed); err != nil || claimed[0] != keyRecordV1 || rec.ClaimBy != nil || !bytes.Equal(rec.Sealed, oldSealed.Sealed) || !rec.Created.Equal(t0) {
		t.Fatalf("claimed JSON record: %v %v", rec, err)
	}

	// A delete keeps a binary prior, restorable.
	if err := c.DeleteKeyKeepingPrior(ctx, "user:gone", "PASSKEY", Access{}); err != nil {
		t.Fatal(err)
	}
	restoresBinaryPrior("user:gone", "gone key")

	// Restoring the legacy JSON prior: the current JSON record becomes a
	// binary prior and the restored value a binary record.
	if err := c.RestoreVersion(ctx, "user:old", "PASSKEY", priorID); err != nil {
		t.Fatal(err)
	}
	binaryAt(store.BucketKeys, store.Key("user:old", "PASSKEY"))
	if k, err := c.GetKey(ctx, "user:old", "PASSKEY"); err != nil || string(k.Reveal()) != "older key" {
		t.Fatalf("restore of a JSON prior: %v", err)
	}
	vs, _ = c.ListVersions(ctx, "user:old", "PASSKEY")
	if len(vs) != 2 || vs[0].ID != priorID {
		t.Fatalf("versions after the restore: %+v", vs)
	}
	if !bytes.Equal(get(store.BucketKeyVersions, store.Key("user:old", "PASSKEY", priorID)), legacyPrior) {
		t.Fatal("the restored JSON prior was rewritten")
	}
	binaryAt(store.BucketKeyVersions, store.Key("user:old", "PASSKEY", vs[1].ID))
	if rep, err := verify("converted.db", db); err != nil || rep.Keys != 6 {
		t.Fatalf("verify after the conversions: %+v %v", rep, err)
	}

	// A truncated binary record fails the backup check, with the cause.
	b := get(store.BucketKeys, store.Key("user:old", "PASSKEY"))
	if err := db.Update(ctx, func(tx *store.Tx) error {
		return tx.Put(store.BucketKeys, store.Key("user:old", "PASSKEY"), b[:len(b)-1])
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := verify("damaged.db", db); !errors.Is(err, ErrMalformedRecord) {
		t.Fatalf("verify with a truncated binary record: %v", err)
	}
	if _, _, err := c.Lookup(ctx, "user:old", "PASSKEY"); !errors.Is(err, ErrMalformedRecord) {
		t.Fatalf("release of a truncated binary record: %v", err)
	}
}

// TestRecoveryCanaryReadsBothForms: the recovered-root check opens the
// first key record in either form, so a wrong root key is caught; were
// the record not decoded, it would be skipped and the wrong key pass.
func TestRecoveryCanaryReadsBothForms(t *testing.T) {
	ctx := context.Background()
	root, other := testRoot(t), testRoot(t)
	for _, form := range []string{"json", "binary"} {
		db := openDB(t, filepath.Join(t.TempDir(), form+".db"))
		if form == "json" {
			rec := legacyRecord(t, root, "key", "user:a", "PASSKEY", "k", keyRecord{Format: FormatBytes, Created: time.Now().UTC(), Updated: time.Now().UTC()})
			if err := db.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, store.Key("user:a", "PASSKEY"), rec) }); err != nil {
				t.Fatal(err)
			}
		} else if _, err := NewCustody(db, root, CustodyOptions{}).PutKey(ctx, "user:a", "PASSKEY", []byte("k"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := openCanary(ctx, db, root); err != nil {
			t.Errorf("%s: the right root: %v", form, err)
		}
		if err := openCanary(ctx, db, other); !errors.Is(err, ErrWrongRootKey) {
			t.Errorf("%s: a wrong root: %v, want ErrWrongRootKey", form, err)
		}
		db.Close()
	}
}
