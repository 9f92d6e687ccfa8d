package clientshares

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
)

// priorRecords returns the keys and values of the prior versions of
// (owner, method).
func (v *env) priorRecords(owner, method string) map[string][]byte {
	v.t.Helper()
	out := map[string][]byte{}
	prefix := string(store.Prefix(owner, method, versionsSub))
	for k, val := range v.rawBucket() {
		if strings.HasPrefix(k, prefix) {
			out[k] = val
		}
	}
	return out
}

// TestPriorShareCopiedBackDoesNotOpen: a prior version copied over the
// current record (an attacker with the file, or a careless repair) does
// not open as the current share: prior versions are sealed under their own
// kind. The admin restore still brings it back.
func TestPriorShareCopiedBackDoesNotOpen(t *testing.T) {
	v := newEnv(t)
	p := sharePath("ivan", "PASSWORD")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct1, "stored": true}), 201, "")
	v.now = v.now.Add(time.Minute)
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), 200, "")
	priors := v.priorRecords("user:ivan", "PASSWORD")
	if len(priors) != 1 {
		t.Fatalf("%d prior versions, want 1", len(priors))
	}
	var id string
	for k, prior := range priors {
		id = k[strings.LastIndexByte(k, 0)+1:]
		if err := v.DB.Update(context.Background(), func(tx *store.Tx) error {
			return tx.Put(store.BucketClientShares, store.Key("user:ivan", "PASSWORD"), prior)
		}); err != nil {
			t.Fatal(err)
		}
	}
	r := v.Admin("GET", p, nil)
	want(t, r, 500, "record_damaged")
	if strings.Contains(string(r.Body), ct1) {
		t.Fatal("the copied-back prior share was released")
	}
	// The audited restore brings the prior share back.
	v.now = v.now.Add(time.Minute)
	want(t, v.Admin("POST", p+"/versions/"+id+"/restore", nil), 200, "")
	var got shareBody
	v.Admin("GET", p, nil).Decode(t, &got)
	if got.CipherText != ct1 || !got.Stored {
		t.Fatalf("after restore: %+v", got)
	}
}

// TestLegacyPriorSharesMigrated: prior versions written by an older build
// (a verbatim copy of the current record, sealed as client_share) are
// sealed again under the prior kind when the store starts, so they no
// longer open as current, and they stay restorable.
func TestLegacyPriorSharesMigrated(t *testing.T) {
	v := newEnv(t)
	p := sharePath("judy", "PASSWORD")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), 201, "")
	// What an older build kept as the prior version: the current record as
	// it was, sealed as client_share, version 1.
	sealed, err := v.Root.Seal(binding("user:judy", "PASSWORD", 1), []byte(ct1))
	if err != nil {
		t.Fatal(err)
	}
	legacy := []byte(`{"st":true,"c":"2025-01-01T00:00:00Z","u":"2025-01-01T00:00:00Z","s":"` + base64.StdEncoding.EncodeToString(sealed) + `"}`)
	id := versionID(v.now.Add(-time.Hour))
	vk := store.Key("user:judy", "PASSWORD", versionsSub, id)
	if err := v.DB.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.DeleteMeta(store.MetaClientSharesPriorsSealed); err != nil {
			return err
		}
		return tx.Put(store.BucketClientShares, vk, legacy)
	}); err != nil {
		t.Fatal(err)
	}
	// The next start migrates it.
	st, err := New(Options{DB: v.DB, Root: v.Root, Clock: func() time.Time { return v.now }})
	if err != nil {
		t.Fatal(err)
	}
	migrated := v.rawBucket()[string(vk)]
	rec, err := decode(migrated)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Root.Open(binding("user:judy", "PASSWORD", 0), rec.Sealed); err == nil {
		t.Fatal("the legacy prior version still opens as a current share")
	}
	if err := v.DB.Update(context.Background(), func(tx *store.Tx) error {
		return tx.Put(store.BucketClientShares, store.Key("user:judy", "PASSWORD"), migrated)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(context.Background(), "user:judy", "PASSWORD"); err == nil {
		t.Fatal("a migrated prior copied back opens as current")
	}
	info, err := st.RestoreVersion(context.Background(), "user:judy", "PASSWORD", id)
	if err != nil || !info.Stored {
		t.Fatalf("restore of the migrated prior: %+v %v", info, err)
	}
	sh, err := st.Get(context.Background(), "user:judy", "PASSWORD")
	if err != nil || sh.CipherText.Reveal() != ct1 {
		t.Fatalf("after restore: %v", err)
	}
}
