package custodian

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/store"
)

func testRoot(t testing.TB) *enclave.Root {
	t.Helper()
	r, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// versionsSub is the key part of prior versions in the stored layout
// (store.CustodianVersions), written out here so that the tests that plant
// raw records also pin the format.
const versionsSub = "versions"

// priorRecords returns the prior-version records of (owner, method).
func priorRecords(t testing.TB, db *store.DB, owner, method string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := db.View(testCtx(t), func(tx *store.Tx) error {
		return tx.ForEach(store.BucketCustodian, store.Prefix(owner, method, versionsSub), func(k, v []byte) error {
			out[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func putRaw(t testing.TB, db *store.DB, k, v []byte) {
	t.Helper()
	if err := db.Update(testCtx(t), func(tx *store.Tx) error { return tx.Put(store.BucketCustodian, k, v) }); err != nil {
		t.Fatal(err)
	}
}

// TestPriorShareCopiedBackDoesNotOpen: a prior version copied over the
// current record does not open as the current share (its Transit
// ciphertext is sealed under the root key as custodian_prior); the
// restore still brings it back.
func TestPriorShareCopiedBackDoesNotOpen(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	s := newService(t, newClient(t, v, nil), db, ServiceOptions{Root: testRoot(t)})
	ctx := testCtx(t)
	for _, share := range []string{"share-1", "share-2"} {
		if _, err := s.Put(ctx, "user:alice", "default", []byte(share)); err != nil {
			t.Fatal(err)
		}
	}
	priors := priorRecords(t, db, "user:alice", "default")
	if len(priors) != 1 {
		t.Fatalf("%d prior versions, want 1", len(priors))
	}
	var id string
	for k, prior := range priors {
		if strings.Contains(string(prior), "vault:v") {
			t.Fatalf("the prior version holds a plain Transit ciphertext: %s", prior)
		}
		id = k[strings.LastIndexByte(k, 0)+1:]
		putRaw(t, db, store.Key("user:alice", "default"), prior)
	}
	if got, err := s.Get(ctx, "user:alice", "default"); err == nil {
		t.Fatalf("the copied-back prior opened as current: %q", got.Reveal())
	} else {
		wantCode(t, err, "record_damaged")
	}
	if _, err := s.List(ctx, "user:alice"); err == nil {
		t.Fatal("List opened a copied-back prior")
	}
	if err := s.RestoreVersion(ctx, "user:alice", "default", id); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got, err := s.Get(ctx, "user:alice", "default")
	if err != nil || string(got.Reveal()) != "share-1" {
		t.Fatalf("after restore: %q %v", got.Reveal(), err)
	}
}

// TestLegacyPriorSharesSealedAtStart: prior versions an older build kept as
// plain ciphertext records are sealed at the next start; they stay
// restorable and a copy over the current one no longer opens. The rewrap
// job rewraps sealed priors too.
func TestLegacyPriorSharesSealedAtStart(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	client := newClient(t, v, nil)
	old := newService(t, client, db, ServiceOptions{}) // an older build: no root
	ctx := testCtx(t)
	for _, share := range []string{"share-1", "share-2"} {
		if _, err := old.Put(ctx, "user:bob", "default", []byte(share)); err != nil {
			t.Fatal(err)
		}
	}
	var id string
	for k, prior := range priorRecords(t, db, "user:bob", "default") {
		if !strings.Contains(string(prior), "vault:v") {
			t.Fatalf("setup: the legacy prior is not plain: %s", prior)
		}
		id = k[strings.LastIndexByte(k, 0)+1:]
	}
	old.Close()

	s := newService(t, client, db, ServiceOptions{Root: testRoot(t)})
	var migrated []byte
	for _, prior := range priorRecords(t, db, "user:bob", "default") {
		var rec record
		if err := json.Unmarshal(prior, &rec); err != nil || rec.Ciphertext != "" || rec.Sealed == nil {
			t.Fatalf("legacy prior not sealed at start: %s", prior)
		}
		migrated = prior
	}
	// Rotate and rewrap: the sealed prior is rewrapped too, and stays sealed.
	v.RotateKey(vaultdev.KeyName)
	jid, err := s.StartRewrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, s, jid); j.State != JobDone || j.Failed != 0 || j.Rewrapped != 2 {
		t.Fatalf("rewrap: %+v", j)
	}
	for _, prior := range priorRecords(t, db, "user:bob", "default") {
		var rec record
		if err := json.Unmarshal(prior, &rec); err != nil || rec.Sealed == nil || rec.KeyVersion != 2 {
			t.Fatalf("prior after rewrap: %s", prior)
		}
	}
	putRaw(t, db, store.Key("user:bob", "default"), migrated)
	if _, err := s.Get(ctx, "user:bob", "default"); err == nil {
		t.Fatal("a migrated prior copied back opened as current")
	}
	if err := s.RestoreVersion(ctx, "user:bob", "default", id); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got, err := s.Get(ctx, "user:bob", "default")
	if err != nil || string(got.Reveal()) != "share-1" {
		t.Fatalf("after restore: %q %v", got.Reveal(), err)
	}
}
