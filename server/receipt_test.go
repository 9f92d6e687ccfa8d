package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/receipt"
)

// A Firebase release answers with a receipt in the Keywarden-Receipt
// header: it verifies with the appliance signing key alone, is about the
// caller (owner, method, key version, request id), matches the release's
// audit line, and costs no TPM command. A refusal carries none; each field
// edited makes it fail.
func TestFirebaseReleaseReceipt(t *testing.T) {
	h := newHarnessOn(t, []apptest.CoreOption{apptest.Receipts()})
	tok := h.issuer.Mint(nil)
	key := []byte("0123456789abcdef0123456789abcdef")
	if r := h.Bearer("PUT", "/v1/firebase/key", tok, keyRequest{Key: b64(key)}); r.Status != 201 || r.Header.Get(receipt.Header) != "" {
		t.Fatalf("put: %d %s (receipt %q)", r.Status, r.Body, r.Header.Get(receipt.Header))
	}
	before := h.tpm.Count()
	r := h.Bearer("GET", "/v1/firebase/key", tok, nil)
	if r.Status != 200 {
		t.Fatalf("get: %d %s", r.Status, r.Body)
	}
	if h.tpm.Count() != before {
		t.Fatalf("a release with a receipt made %d TPM commands", h.tpm.Count()-before)
	}
	hdr := r.Header.Get(receipt.Header)
	if hdr == "" {
		t.Fatal("no Keywarden-Receipt header on a release")
	}
	rc, err := receipt.Parse(hdr)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Verify(rc, h.core.SigningKey); err != nil {
		t.Fatalf("receipt: %v", err)
	}
	s := rc.Statement
	owner := "firebase:proj-a//" + firebasetest.DefaultSubject
	if s.Action != audit.ActionRelease || s.Method != MethodFirebase || s.KeyVersion != "1" || s.RequestID != r.Header.Get("X-Request-Id") || !s.IsOwner(owner) || s.IsOwner(owner+"x") {
		t.Fatalf("statement %+v", s)
	}
	if err := h.audit.Anchor(context.Background()); err != nil {
		t.Fatal(err)
	}
	line, err := audit.FindLine([]string{h.core.AuditDir}, s.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.MatchLine(rc, line); err != nil {
		t.Fatalf("receipt vs its audit line: %v", err)
	}

	// Another appliance's key does not verify it; an edited field fails.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := receipt.Verify(rc, &other.PublicKey); err == nil {
		t.Fatal("receipt verified under another appliance's key")
	}
	if rc.V != receipt.VersionCompact {
		t.Fatalf("receipt version %d, want the compact %d", rc.V, receipt.VersionCompact)
	}
	var m map[string]any
	_ = json.Unmarshal(rc.JSON(), &m)
	m["stmt"].(map[string]any)["key_version"] = "2"
	edited, _ := json.Marshal(m)
	if er, err := receipt.Parse(string(edited)); err != nil || receipt.Verify(er, h.core.SigningKey) == nil {
		t.Fatalf("edited receipt verifies (%v)", err)
	}

	// A refused release carries no receipt.
	bad := h.issuer.Mint(firebasetest.Claims{"sub": "someone-else"})
	if r := h.Bearer("GET", "/v1/firebase/key", bad, nil); r.Status != 404 || r.Header.Get(receipt.Header) != "" {
		t.Fatalf("not found: %d, receipt %q", r.Status, r.Header.Get(receipt.Header))
	}
}
