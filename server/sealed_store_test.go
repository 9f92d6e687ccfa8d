package server

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/server/keys"
)

// sealForStore seals key to the appliance's HPKE key as an app does, with
// the info of (route, owner, method).
func sealForStore(t *testing.T, root *enclave.Root, key []byte, route string, owner enclave.Owner, method string) map[string]any {
	t.Helper()
	priv, err := root.HPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	enc, ct, suite, err := enclave.SealToRecipient(priv.PublicKey().Bytes(), key, keys.StoreInfo(route, owner, method))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"sealedKey": b64(ct), "enc": b64(enc), "suite": suite}
}

func TestFirebaseStoreSealedToApplianceKey(t *testing.T) {
	h := newHarness(t)
	root := h.custody.Root()
	key := []byte("sealed-0123456789abcdef-sealed!!")
	owner := enclave.Owner("firebase:proj-a//" + firebasetest.DefaultSubject)
	tok := h.issuer.Mint(nil)
	body := sealForStore(t, root, key, keys.RouteFirebase, owner, MethodFirebase)

	// Refusals first, while nothing is stored.
	other := h.issuer.Mint(firebasetest.Claims{"sub": "someone-else", "user_id": "someone-else"})
	for _, tc := range []struct {
		name, tok, code string
		body            map[string]any
	}{
		{"the blob sent by another owner", other, "hpke_open_failed", body},
		{"a blob sealed for the import route", tok, "hpke_open_failed", sealForStore(t, root, key, keys.RouteImport, owner, MethodFirebase)},
		{"a blob sealed for another method", tok, "hpke_open_failed", sealForStore(t, root, key, keys.RouteFirebase, owner, "PASSKEY")},
		{"another suite", tok, "unsupported_suite", map[string]any{"sealedKey": body["sealedKey"], "enc": body["enc"], "suite": enclave.SuiteX25519}},
		{"key and sealedKey", tok, "invalid_key", map[string]any{"key": b64(key), "sealedKey": body["sealedKey"], "enc": body["enc"], "suite": body["suite"]}},
		{"sealedKey not base64", tok, "invalid_sealed_key", map[string]any{"sealedKey": "!!", "enc": body["enc"], "suite": body["suite"]}},
	} {
		if r := h.Bearer("PUT", "/v1/firebase/key", tc.tok, tc.body); r.Status != 400 || r.Code() != tc.code {
			t.Fatalf("%s: %d %s, want 400 %s", tc.name, r.Status, r.Body, tc.code)
		}
	}
	if r := h.Bearer("GET", "/v1/firebase/key", other, nil); r.Status != 404 {
		t.Fatalf("the replayed blob stored something for the other owner: %d %s", r.Status, r.Body)
	}

	if r := h.Bearer("PUT", "/v1/firebase/key", tok, body); r.Status != 201 {
		t.Fatalf("sealed put: %d %s", r.Status, r.Body)
	}
	var kr KeyResponse
	r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
	r.Decode(t, &kr)
	if r.Status != 200 || kr.Key != b64(key) {
		t.Fatalf("release after a sealed store: %d %s", r.Status, r.Body)
	}
}

func TestImportSealedToApplianceKey(t *testing.T) {
	h := newHarness(t)
	root := h.custody.Root()
	key := []byte("imported-sealed-key-0123456789ab")
	item := sealForStore(t, root, key, keys.RouteImport, "user:carol", "PASSKEY")
	item["userId"], item["method"] = "carol", "PASSKEY"
	replayed := map[string]any{"userId": "dave", "method": "PASSKEY", "sealedKey": item["sealedKey"], "enc": item["enc"], "suite": item["suite"]}
	onFirebase := sealForStore(t, root, key, keys.RouteFirebase, "user:erin", "PASSKEY")
	onFirebase["userId"], onFirebase["method"] = "erin", "PASSKEY"
	r := h.Admin("POST", "/v1/admin/keys/import", map[string]any{"items": []any{item, replayed, onFirebase}})
	var out struct {
		Results []struct {
			Status int    `json:"status"`
			Code   string `json:"code"`
		} `json:"results"`
	}
	r.Decode(t, &out)
	if r.Status != 200 || len(out.Results) != 3 {
		t.Fatalf("import: %d %s", r.Status, r.Body)
	}
	if out.Results[0].Status != 201 {
		t.Fatalf("sealed item: %+v", out.Results[0])
	}
	for i, res := range out.Results[1:] {
		if res.Status != 400 || res.Code != "hpke_open_failed" {
			t.Fatalf("item %d (replayed): %+v, want 400 hpke_open_failed", i+1, res)
		}
	}
	got, err := h.custody.GetKey(context.Background(), "user:carol", "PASSKEY")
	if err != nil || string(got.Reveal()) != string(key) {
		t.Fatalf("stored %q %v", got.Reveal(), err)
	}
	for _, o := range []enclave.Owner{"user:dave", "user:erin"} {
		if has, _ := h.custody.HasKey(context.Background(), o, "PASSKEY"); has {
			t.Fatalf("a replayed blob stored a key for %s", o)
		}
	}
}
