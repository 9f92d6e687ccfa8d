package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server/attestapi"
	"github.com/keywarden/keywarden/store"
)

// The appliance signing key follows the root key's sealing PCRs at start:
// a stored key made before the binding is replaced by a bound one, a bound
// key is kept across starts, and a key bound to the values of an earlier
// boot state (the root key resealed since) is replaced rather than leaving
// the appliance without receipts.
func TestSigningKeyBoundToSealingPCRsAtStart(t *testing.T) {
	ctx := context.Background()
	tpm := openSwtpmCounting(t)
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cfg := config.Defaults()
	cfg.TPM.PCRs = []int{7} // no sealed root in this store: tpm.pcrs is the selection
	start := func() *appliance {
		t.Helper()
		a := &appliance{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tpm: tpm, db: db, root: root}
		a.startSigningKey(ctx)
		t.Cleanup(a.Close)
		if a.batchKey == nil {
			t.Fatalf("no batch key: %s", a.signWhy)
		}
		return a
	}
	stored := func() *attest.SigningKeyBlob {
		t.Helper()
		b, err := readSigningKeyBlob(ctx, db, store.MetaSigningKey)
		if err != nil || b == nil {
			t.Fatalf("stored signing key: %v", err)
		}
		return b
	}

	// A key from before the binding.
	legacy, err := attest.CreateSigningKey(ctx, tpm, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := legacy.MarshalBinary()
	if err := db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(store.MetaSigningKey, lb) }); err != nil {
		t.Fatal(err)
	}
	a := start()
	first := stored()
	if !first.BoundTo([]int{7}) || bytes.Equal(a.signKey.TPMPublic(), legacy.Public) {
		t.Fatalf("the unbound stored key was kept (PCRs %v)", first.PCRs)
	}
	a.Close()

	// Kept across a restart in the same boot state.
	a = start()
	if !bytes.Equal(a.signKey.TPMPublic(), first.Public) {
		t.Fatal("a bound key was replaced in its own boot state")
	}
	a.Close()

	// The boot state moved (and the root key was resealed to it): the old
	// key no longer signs, the appliance makes a new bound one.
	d := sha256.Sum256([]byte("a new boot chain"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(7), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	a = start()
	if bytes.Equal(a.signKey.TPMPublic(), first.Public) || !stored().BoundTo([]int{7}) {
		t.Fatal("the key of the earlier boot state was kept")
	}
}

// GET /v1/appliance-keys says what the signing key is bound to: the PCRs
// of its TPM2_PolicyPCR and the policy digest, taken from the certified
// public area (so a verifier with the expected PCR values can recompute
// it); a key made without PCRs is reported not bound. A document whose
// binding was edited is refused by VerifyApplianceKeys.
func TestApplianceKeysReportBinding(t *testing.T) {
	ctx := context.Background()
	tpm := openSwtpmCounting(t)
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	akBlob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.LoadAK(ctx, tpm, akBlob)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	pcr7, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(7)}}}}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	want, err := attest.PCRPolicyDigest(map[int][]byte{7: pcr7.PCRValues.Digests[0].Buffer})
	if err != nil {
		t.Fatal(err)
	}
	for _, pcrs := range [][]int{{7}, nil} {
		cfg := config.Defaults()
		cfg.TPM.PCRs = pcrs
		cfg.TPM.AllowNoPCRPolicy = len(pcrs) == 0
		_ = db.Update(ctx, func(tx *store.Tx) error { return tx.DeleteMeta(store.MetaSigningKey) })
		a := &appliance{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tpm: tpm, db: db, root: root}
		a.startSigningKey(ctx)
		if a.batchKey == nil {
			t.Fatalf("PCRs %v: no batch key: %s", pcrs, a.signWhy)
		}
		doc, why := a.certifySigningKey(ctx, ak)
		a.Close()
		if doc == nil {
			t.Fatalf("PCRs %v: no document: %s", pcrs, why)
		}
		body, _ := json.Marshal(doc)
		_, got, err := attestapi.VerifyApplianceKeys(body, ak.Name())
		if err != nil {
			t.Fatalf("PCRs %v: %v", pcrs, err)
		}
		b := got.SigningKeyBinding
		switch {
		case b == nil:
			t.Fatalf("PCRs %v: no binding in %s", pcrs, body)
		case len(pcrs) > 0 && (b.Kind != string(attest.KeyBoundToPolicy) || !slices.Equal(b.PCRs, pcrs) || b.PolicyDigest != hex.EncodeToString(want)):
			t.Fatalf("bound key: binding %+v, want pcr_policy over %v with digest %x", b, pcrs, want)
		case len(pcrs) == 0 && (b.Kind != string(attest.KeyNotBound) || len(b.PCRs) != 0 || b.PolicyDigest != ""):
			t.Fatalf("unbound key: binding %+v", b)
		}
		// A document that claims another binding than its certified key's.
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		if len(pcrs) > 0 {
			m["signing_key_binding"].(map[string]any)["policy_digest"] = strings.Repeat("00", 32)
		} else {
			m["signing_key_binding"] = map[string]any{"kind": "pcr_policy", "pcrs": []int{7}, "policy_digest": hex.EncodeToString(want)}
		}
		edited, _ := json.Marshal(m)
		if _, _, err := attestapi.VerifyApplianceKeys(edited, ak.Name()); err == nil {
			t.Fatalf("PCRs %v: a document with an edited binding verified", pcrs)
		}
	}
}
