package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/receipt"
)

// cliOutput runs keywarden with args and returns what it printed.
func cliOutput(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	errc := make(chan error, 1)
	go func() { errc <- run(context.Background(), args); w.Close() }()
	b, _ := io.ReadAll(r)
	os.Stdout = old
	return string(b), <-errc
}

// Receipts of releases made before and after a restart verify with the
// same appliance signing key (kept in the TPM across starts) and match
// their audit lines; the whole log verifies with that public key only.
func TestReceiptsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, cfg := devConfig(t, dir, oldSeed)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var receipts []*receipt.Receipt
	var keyIDs []string
	var pemKey []byte
	for run := 0; run < 2; run++ {
		a, err := openAppliance(ctx, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		if a.batchKey == nil {
			t.Fatalf("no batch key: %s", a.signWhy)
		}
		keyIDs = append(keyIDs, receipt.KeyID(a.signKey.PublicKey()))
		der, _ := x509.MarshalPKIXPublicKey(a.signKey.PublicKey())
		pemKey = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		rctx, slot := audit.WithReceiptSlot(audit.WithRequestID(ctx, fmt.Sprint("req-", run)))
		if err := a.audit.Record(rctx, audit.Event{Action: audit.ActionRelease, Outcome: audit.OutcomeSuccess,
			Owner: "firebase:p//alice", Method: "FIREBASE", Fields: map[string]string{receipt.FieldKeyVersion: "1"}}); err != nil {
			t.Fatal(err)
		}
		if slot.Receipt() == nil {
			t.Fatal("no receipt")
		}
		receipts = append(receipts, slot.Receipt())
		a.Close()
	}
	if keyIDs[0] != keyIDs[1] {
		t.Fatalf("the signing key changed across a restart: %v", keyIDs)
	}
	keyFile := filepath.Join(dir, "appliance.pem")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, r := range receipts {
		f := filepath.Join(dir, fmt.Sprintf("receipt-%d", i))
		if err := os.WriteFile(f, []byte(r.Encode()), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := cliOutput(t, "receipt", "verify", "-key", keyFile, "-owner", "firebase:p//alice", "-audit", cfg.Audit.Dir, f)
		if err != nil || !strings.Contains(out, "matches audit line") || !strings.Contains(out, "owner matches") {
			t.Fatalf("receipt %d: %v\n%s", i, err, out)
		}
		if _, err := cliOutput(t, "receipt", "verify", "-key", keyFile, "-owner", "firebase:p//bob", f); err == nil {
			t.Fatalf("receipt %d accepted for another owner", i)
		}
		edited := strings.Replace(string(mustJSON(t, r)), `"req-`, `"reX-`, 1)
		if err := os.WriteFile(f, []byte(edited), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := cliOutput(t, "receipt", "verify", "-key", keyFile, f); err == nil {
			t.Fatalf("edited receipt %d verifies", i)
		}
	}
	out, err := cliOutput(t, "audit", "verify", "-key", keyFile, "-complete", cfg.Audit.Dir)
	if err != nil || !strings.Contains(out, "chain and signed anchors verify") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

func mustJSON(t *testing.T, r *receipt.Receipt) []byte {
	t.Helper()
	b, err := receipt.Parse(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(b)
	return raw
}

// `keywarden receipt verify` still verifies receipts issued in the version
// 1 JSON encoding (before the compact one), with the key as PEM, and
// refuses one of them for another owner.
func TestReceiptVerifyVersion1(t *testing.T) {
	b, err := os.ReadFile("../../receipt/testdata/receipts-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		PEM      string `json:"pem"`
		Receipts []struct{ Receipt, Owner string }
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, []byte(fx.PEM), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, r := range fx.Receipts {
		f := filepath.Join(dir, fmt.Sprint("r", i))
		if err := os.WriteFile(f, []byte(receipt.Header+": "+r.Receipt+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := cliOutput(t, "receipt", "verify", "-key", keyFile, "-owner", r.Owner, f); err != nil || !strings.Contains(out, "receipt verifies") {
			t.Fatalf("%d: %v\n%s", i, err, out)
		}
		if _, err := cliOutput(t, "receipt", "verify", "-key", keyFile, "-owner", r.Owner+"x", f); err == nil {
			t.Fatalf("%d: verified for another owner", i)
		}
	}
}

// `keywarden audit verify` on a rotated log whose first file was deleted
// says the log does not start at genesis (and still verifies the rest);
// with -from-start it fails.
func TestAuditVerifyMissingStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bk, err := receipt.NewBatchKey("", time.Now(), sk)
	if err != nil {
		t.Fatal(err)
	}
	auditDir := filepath.Join(dir, "audit")
	l, err := audit.Open(ctx, audit.Options{Dir: auditDir, AnchorKey: secret.NewBytes([]byte("0123456789abcdef0123456789abcdef")), MaxFileBytes: 4 << 10, ReserveBytes: 64 << 10, Signer: bk})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := l.Record(ctx, audit.Event{Action: audit.ActionRelease, Outcome: audit.OutcomeSuccess, Owner: fmt.Sprint("user:", i)}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := l.Anchor(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&sk.PublicKey)
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := cliOutput(t, "audit", "verify", "-key", keyFile, "-from-start", "-complete", auditDir)
	if err != nil || !strings.Contains(out, "starts at genesis") {
		t.Fatalf("whole log: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(auditDir, "audit-*.jsonl"))
	if len(files) < 2 {
		t.Fatalf("want a rotated log, got %v", files)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	out, err = cliOutput(t, "audit", "verify", "-key", keyFile, auditDir)
	if err != nil || !strings.Contains(out, "does NOT start at genesis") {
		t.Fatalf("without its first file: %v\n%s", err, out)
	}
	out, err = cliOutput(t, "audit", "verify", "-key", keyFile, "-from-start", auditDir)
	if !errors.Is(err, audit.ErrMissingStart) || !strings.Contains(out, "FIRST BROKEN ENTRY") {
		t.Fatalf("-from-start without the first file: %v\n%s", err, out)
	}
}
