package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/store"
)

// TestOfflineCommandsOnEmbedded: on store.backend embedded the offline
// commands that only change node-local state run on a stopped node:
// `reseal` seals the root key in data.dir/node/state.json to other PCRs
// (audited; the blob then refuses to unseal once PCR 16 moves, and the
// node starts on it and releases the key stored before), and `vault csr`
// keeps the Vault client key in the node-local state, bound to the PCRs
// the node's root key is sealed to, certified by the node's attestation
// key (a CA's verify-csr accepts it), found there by serve's tpm-cert
// start, kept on a second run, and not loadable in another TPM. While the node runs both are refused and the
// state is left as it was. `recover` and the offline `rollback accept`
// refuse, naming what to do instead.
func TestOfflineCommandsOnEmbedded(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("needs the TPM simulator (cgo)")
	}
	embeddedEnv(t)
	iss := firebasetest.NewIssuer(t, "proj-offline-emb")
	t.Setenv("KEYWARDEN_FIREBASE_PROJECT_ID", "proj-offline-emb")
	t.Setenv("KEYWARDEN_FIREBASE_CERTS_URL", iss.URL())
	const (
		seed     = 6161
		adminKey = "offline-embedded-admin-key-0123456789"
	)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	evFile := filepath.Join(dir, "evidence.json")
	ctx := context.Background()
	key := []byte("0123456789abcdef0123456789abcdef")
	tok := iss.Mint(nil)

	// `keywarden dev` bootstraps a one-member cluster; a key is stored.
	url, stop := startDev(t, dir, "6161", adminKey)
	if st, code, _, _ := keyCall(t, "PUT", url, tok, key); st != 201 {
		t.Fatalf("store: %d %s", st, code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := loadConfig(nil, true)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reseal", func(t *testing.T) {
		if err := run(ctx, []string{"reseal", "-dev", "-pcrs", "16"}); err != nil {
			t.Fatal(err)
		}
		st, err := cluster.LoadState(dataDir)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := st.Sealed()
		if err != nil || !slices.Equal(sealed.PCRs, []int{16}) {
			t.Fatalf("sealed to %v (%v), want [16]", sealed.PCRs, err)
		}
		if !strings.Contains(auditText(t, cfg.Audit.Dir), actionReseal) {
			t.Fatal("reseal not audited")
		}
		// As an attacker who boots something else: PCR 16 moved, the
		// resealed root key does not unseal.
		sim, err := tpmsim.Open(seed)
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256([]byte("another boot"))
		if _, err := (tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
		}).Execute(sim); err != nil {
			t.Fatal(err)
		}
		if k, err := enclave.UnsealRoot(ctx, sim, sealed); err == nil {
			k.Wipe()
			t.Fatal("the resealed root key unsealed with PCR 16 changed")
		}
		sim.Close()
		// The node starts on the resealed key and serves what it stored.
		url, stop := startDev(t, dir, "6161", adminKey)
		st2, code, got, _ := keyCall(t, "GET", url, tok, nil)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if st2 != 200 || !bytes.Equal(got, key) {
			t.Fatalf("release after reseal: %d %s", st2, code)
		}
	})

	t.Run("vault csr", func(t *testing.T) {
		if err := run(ctx, []string{"vault", "csr", "-dev", "-cn", "node1", "-out", evFile}); err != nil {
			t.Fatal(err)
		}
		st, err := cluster.LoadState(dataDir)
		if err != nil || len(st.VaultClientKey) == 0 {
			t.Fatalf("no Vault client key in the node-local state: %v", err)
		}
		blob, err := attest.ParseClientKeyBlob(st.VaultClientKey)
		if err != nil || !blob.BoundTo([]int{16}) {
			t.Fatalf("the client key is not bound to the node's sealing PCRs [16]: %v %v", blob, err)
		}
		raw, err := os.ReadFile(evFile)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := attest.ParseClientKeyEvidence(raw)
		if err != nil {
			t.Fatal(err)
		}
		// The CA's side, pinned to this node's attestation key.
		akBlob, err := attest.ParseAKBlob(st.AttestAK)
		if err != nil {
			t.Fatal(err)
		}
		akName, err := akBlob.Name()
		if err != nil {
			t.Fatal(err)
		}
		sim, err := tpmsim.Open(seed)
		if err != nil {
			t.Fatal(err)
		}
		quoted, err := attest.ReadPCRs(ctx, sim, cfg.TPM.AttestPCRs)
		if err != nil {
			t.Fatal(err)
		}
		bound, err := attest.ReadPCRs(ctx, sim, []int{16})
		sim.Close()
		if err != nil {
			t.Fatal(err)
		}
		policy, _ := attest.PolicyFromPCRs(quoted)
		keyPolicy, _ := attest.PolicyFromPCRs(bound)
		facts, err := attest.VerifyClientKey(ev, attest.VerifyOptions{AKName: akName, Policy: policy, KeyPolicy: keyPolicy, Nonce: ev.Nonce})
		if err != nil || facts.KeyBinding != attest.KeyBoundToPolicy || facts.CSR.Subject.CommonName != "node1" {
			t.Fatalf("the CA's check of the evidence: %+v %v", facts, err)
		}
		// A second run keeps the key.
		if err := run(ctx, []string{"vault", "csr", "-dev", "-cn", "node1", "-out", evFile}); err != nil {
			t.Fatal(err)
		}
		if again, _ := cluster.LoadState(dataDir); !bytes.Equal(again.VaultClientKey, st.VaultClientKey) {
			t.Fatal("a second vault csr replaced the client key")
		}
		// serve (vault.auth tpm-cert) finds the key where vault csr put it
		// and signs with it in this TPM; the store has none.
		sim, err = tpmsim.Open(seed)
		if err != nil {
			t.Fatal(err)
		}
		empty, err := store.Open(filepath.Join(t.TempDir(), "empty.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		a := &appliance{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tpm: tpmdev.NewCounting(sim), db: empty, node: st}
		ck, aerr := loadVaultClientKey(ctx, a)
		if aerr != nil {
			t.Errorf("serve's load of the node's Vault client key: %v", aerr)
		} else {
			ck.Close()
		}
		empty.Close()
		sim.Close()
		// As an attacker with a copy of state.json on another machine:
		// the key does not load in another TPM.
		other, err := tpmsim.Open(6262)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if k, err := attest.LoadClientKey(ctx, other, blob); err == nil {
			k.Close()
			t.Fatal("the node's Vault client key loaded in another TPM")
		}
	})

	t.Run("refused with what to do instead", func(t *testing.T) {
		err := run(ctx, []string{"rollback", "accept", "-dev"})
		if err == nil || !strings.Contains(err.Error(), "serve -accept-rollback") {
			t.Errorf("rollback accept: %v, want a refusal naming serve -accept-rollback", err)
		}
		err = run(ctx, []string{"recover", "-dev", "-backup", filepath.Join(dir, "none.dump"), "-identity", filepath.Join(dir, "none.key")})
		if err == nil || !strings.Contains(err.Error(), "cluster join") || !strings.Contains(err.Error(), "cluster remove") {
			t.Errorf("recover: %v, want a refusal naming cluster remove and cluster join", err)
		}
	})

	// Last (it needs what the subtests above showed working): while the
	// node runs, both are refused and the state is left as it was.
	if t.Failed() {
		return
	}
	t.Run("refused while the node runs", func(t *testing.T) {
		_, stop := startDev(t, dir, "6161", adminKey)
		defer func() {
			if err := stop(); err != nil {
				t.Error(err)
			}
		}()
		os.Remove(evFile)
		before, err := os.ReadFile(cluster.StatePath(dataDir))
		if err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"reseal", "-dev", "-pcrs", "16"}, {"vault", "csr", "-dev", "-cn", "node1", "-out", evFile}} {
			if err := run(ctx, args); err == nil || !strings.Contains(err.Error(), "member is running") {
				t.Errorf("%s while the node runs: %v, want a refusal naming the running server", strings.Join(args, " "), err)
			}
		}
		if after, _ := os.ReadFile(cluster.StatePath(dataDir)); !bytes.Equal(before, after) {
			t.Fatal("a refused command changed the node-local state")
		}
		if _, err := os.Stat(evFile); err == nil {
			t.Fatal("vault csr wrote evidence while the node ran")
		}
	})
}
