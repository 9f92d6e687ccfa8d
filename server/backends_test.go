package server

import (
	"net/url"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// storeBackends are the backends the appliance serves on: today's bbolt
// file and a one-member etcd embedded in the test process. Each returns
// the core options that put the store on it.
var storeBackends = []struct {
	name string
	core func(t *testing.T) []apptest.CoreOption
}{
	{"bbolt", func(*testing.T) []apptest.CoreOption { return nil }},
	{"etcd", func(t *testing.T) []apptest.CoreOption {
		c := etcddev.Embedded(t)
		return []apptest.CoreOption{apptest.StoreBackend(func(tb testing.TB) store.Backend { return c.Backend(tb, etcdstore.Options{}) })}
	}},
}

// TestFirebaseKeyLifecycleOnEveryBackend: store, release, delete, the
// prior version listed and restored, released again, and readiness, the
// same on every store backend.
func TestFirebaseKeyLifecycleOnEveryBackend(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			h := newHarnessOn(t, b.core(t))
			key := b64([]byte("0123456789abcdef0123456789abcdef"))
			owner := "firebase:proj-a//" + firebasetest.DefaultSubject
			ownerPath := "/v1/admin/firebase/users/" + url.PathEscape(owner)
			tok := h.issuer.Mint(nil)
			if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key}); r.Status != 201 {
				t.Fatalf("put: %d %s", r.Status, r.Body)
			}
			var got KeyResponse
			h.Bearer("GET", "/v1/firebase/key", tok, nil).Decode(t, &got)
			if got.Key != key {
				t.Fatal("released key differs")
			}
			if r := h.Bearer("DELETE", "/v1/firebase/key", tok, nil); r.Status != 204 {
				t.Fatalf("delete: %d %s", r.Status, r.Body)
			}
			if r := h.Bearer("GET", "/v1/firebase/key", tok, nil); r.Status != 404 {
				t.Fatalf("release after delete: %d %s", r.Status, r.Body)
			}
			var vs struct {
				Versions []enclave.VersionInfo `json:"versions"`
			}
			h.Admin("GET", ownerPath+"/keys/FIREBASE/versions", nil).Decode(t, &vs)
			if len(vs.Versions) != 1 {
				t.Fatalf("versions after delete: %+v", vs)
			}
			if r := h.Admin("POST", ownerPath+"/keys/FIREBASE/versions/"+vs.Versions[0].ID+"/restore", nil); r.Status != 204 {
				t.Fatalf("restore: %d %s", r.Status, r.Body)
			}
			h.Bearer("GET", "/v1/firebase/key", tok, nil).Decode(t, &got)
			if got.Key != key {
				t.Fatal("the restored key is not the original")
			}
			if r := h.Do("GET", "/readyz", nil); r.Status != 200 {
				t.Fatalf("readyz: %d %s", r.Status, r.Body)
			}
		})
	}
}

// TestStoreUnavailableIs503: when the store's etcd has no quorum, a
// release is refused with 503 store_unavailable and a Retry-After (not a
// 500, and never an answer from stale state), a store is refused the same
// way, and /readyz says not ready within its own deadline.
func TestStoreUnavailableIs503(t *testing.T) {
	c := etcddev.EmbeddedCluster(t, 3)
	h := newHarnessOn(t, []apptest.CoreOption{apptest.StoreBackend(func(tb testing.TB) store.Backend {
		return c.Backend(tb, etcdstore.Options{TxTimeout: 3 * time.Second})
	})})
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	tok := h.issuer.Mint(nil)
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: key}); r.Status != 201 {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	c.Stop(1)
	c.Stop(2)
	r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
	if r.Status != 503 || r.Code() != "store_unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("release without a quorum: %d %s (Retry-After %q)", r.Status, r.Body, r.Header.Get("Retry-After"))
	}
	other := h.issuer.Mint(firebasetest.Claims{"sub": "other-user", "user_id": "other-user"})
	if r := h.Bearer("PUT", "/v1/firebase/key", other, keyRequest{Key: key}); r.Status != 503 || r.Code() != "store_unavailable" {
		t.Fatalf("store without a quorum: %d %s", r.Status, r.Body)
	}
	if r := h.Do("GET", "/readyz", nil); r.Status != 503 {
		t.Fatalf("readyz without a quorum: %d %s", r.Status, r.Body)
	}
}
