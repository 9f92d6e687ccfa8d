package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store"
)

// TestKeyRecordFormsOverHTTP (decisions/54): a key record in the JSON form
// of earlier builds releases and is described through the API with the
// times it was written with, and converts to the binary form when the key
// is overwritten; a stored record that does not decode (binary truncated,
// or JSON garbage) answers 500 record_damaged, naming none of its bytes.
func TestKeyRecordFormsOverHTTP(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	tok := h.issuer.Mint(nil)
	owner := enclave.Owner("firebase:proj-a//" + firebasetest.DefaultSubject)
	k := store.Key(string(owner), MethodFirebase)
	put := func(v []byte) {
		t.Helper()
		if err := h.db.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, k, v) }); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() []byte {
		t.Helper()
		var v []byte
		if err := h.db.View(ctx, func(tx *store.Tx) error {
			b, err := tx.Get(store.BucketKeys, k)
			v = bytes.Clone(b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}

	// The JSON record an earlier build wrote.
	key := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := h.core.Root.Seal(enclave.Binding{Kind: "key", Owner: owner, Method: MethodFirebase, Version: 1}, key)
	if err != nil {
		t.Fatal(err)
	}
	created := "2025-06-01T08:30:15.123456789Z"
	old, _ := json.Marshal(map[string]any{"f": enclave.FormatBytes, "c": created, "u": created, "s": sealed})
	put(old)
	r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
	var kr KeyResponse
	r.Decode(t, &kr)
	if r.Status != 200 || kr.Key != b64(key) {
		t.Fatalf("release of a JSON record: %d %s", r.Status, r.Body)
	}
	desc := h.Admin("GET", "/v1/admin/owners/"+url.PathEscape(string(owner)), nil)
	if desc.Status != 200 || !strings.Contains(string(desc.Body), `"createdAt":"`+created+`"`) {
		t.Fatalf("owner with a JSON record: %d %s", desc.Status, desc.Body)
	}
	if !bytes.Equal(stored(), old) {
		t.Fatal("a read rewrote the JSON record")
	}

	// An overwrite writes the binary form, keeping the created time.
	key2 := []byte("fedcba9876543210fedcba9876543210")
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(key2)}); r.Status != 200 {
		t.Fatalf("overwrite: %d %s", r.Status, r.Body)
	}
	bin := stored()
	if bin[0] != 0x01 {
		t.Fatalf("the overwritten record starts with %#02x, want the binary version 0x01", bin[0])
	}
	desc = h.Admin("GET", "/v1/admin/owners/"+url.PathEscape(string(owner)), nil)
	if desc.Status != 200 || !strings.Contains(string(desc.Body), `"createdAt":"`+created+`"`) || !strings.Contains(string(desc.Body), `"version":2`) {
		t.Fatalf("owner after the overwrite: %d %s", desc.Status, desc.Body)
	}
	r = h.Bearer("GET", "/v1/firebase/key", tok, nil)
	r.Decode(t, &kr)
	if r.Status != 200 || kr.Key != b64(key2) {
		t.Fatalf("release of the binary record: %d %s", r.Status, r.Body)
	}

	// Damaged records, in either form.
	for name, v := range map[string][]byte{
		"binary truncated": bin[:len(bin)-1],
		"binary version 2": append([]byte{0x02}, bin[1:]...),
		"JSON garbage":     []byte(`{"f":"bytes","c":"` + time.Now().String() + `"`),
	} {
		put(v)
		r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
		if r.Status != 500 || r.Code() != "record_damaged" {
			t.Fatalf("%s: %d %s, want 500 record_damaged", name, r.Status, r.Body)
		}
		if bytes.Contains(r.Body, bin[40:60]) || bytes.Contains(r.Body, []byte(b64(bin[40:70]))) {
			t.Fatalf("%s: the answer names the record's bytes: %s", name, r.Body)
		}
	}
}
