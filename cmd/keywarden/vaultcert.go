package main

// vault.auth tpm-cert: the appliance logs in to Vault with a TLS client
// certificate whose private key was made in, and never leaves, the TPM.
//
//	keywarden vault csr [-config FILE] [-cn NAME] [-nonce HEX] [-out FILE] [-new-key]
//	    (server stopped) makes the client key when there is none, and writes
//	    its certificate request with the attestation key's certification
//	    of the key and a quote, as JSON evidence for the CA. The key is
//	    bound to the PCRs the root key is sealed to (it signs only in that
//	    boot state); a stored key that is not (made before the binding, or
//	    before a reseal) is replaced only with -new-key.
//	keywarden vault verify-csr -policy FILE -ak-name HEX [-key-policy FILE] [-nonce HEX] [-out FILE] EVIDENCE
//	    (the CA's side; no TPM) checks the evidence and writes the request
//	    (PEM) to sign only when the key is the attested TPM's (and, with
//	    -key-policy, bound to those PCR values).
//
// The key's blob (attest.ClientKeyBlob, not secret: it loads only in this
// TPM) is kept in the store's meta bucket next to the attestation key's; on
// store.backend embedded in the node-local state (data.dir/node/state.json)
// next to this node's attestation key, so `vault csr` runs on a stopped
// node of a cluster without its etcd member.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
)

const vaultUsage = `vault: want one of
  vault csr        [-config FILE] [-cn NAME] [-nonce HEX] [-out FILE] [-new-key]   (server stopped)
  vault verify-csr -policy FILE -ak-name HEX [-key-policy FILE] [-nonce HEX] [-out FILE] EVIDENCE`

func cmdVault(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError(vaultUsage)
	}
	switch args[0] {
	case "csr":
		return vaultCSR(ctx, args[1:], os.Stdout, os.Stderr)
	case "verify-csr":
		return vaultVerifyCSR(args[1:], os.Stdout, os.Stderr)
	}
	return usageError(vaultUsage)
}

// vaultClientKeyMeta is the meta key of this node's Vault client key
// blob: the key lives in one TPM, so on a store several named nodes share
// (rollback.node set) each node keeps its own.
func vaultClientKeyMeta(cfg config.Config) store.MetaKey {
	if cfg.Rollback.Node != "" {
		return store.MetaVaultClientKey.ForNode(cfg.Rollback.Node)
	}
	return store.MetaVaultClientKey
}

// readVaultClientKey returns the stored client key blob under mk, or nil
// when there is none.
func readVaultClientKey(ctx context.Context, db *store.DB, mk store.MetaKey) (*attest.ClientKeyBlob, error) {
	var b []byte
	err := db.View(ctx, func(tx *store.Tx) (err error) { b, err = tx.GetMeta(mk); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return attest.ParseClientKeyBlob(b)
}

// sealingPCRs returns the PCRs the stored root key is sealed to: the
// selection the appliance binds its TPM keys to (the Vault client key and
// the appliance signing key sign only while these PCRs hold the values
// they held when the key was made). What the root key is sealed to
// counts, as in checkRootPCRPolicy; before init, tpm.pcrs. Empty: the
// keys are not bound (dev mode, tpm.allow_no_pcr_policy).
//
// On store.backend embedded the root key is sealed in the node-local
// state (each node to its own TPM and PCRs), not in the store.
func sealingPCRs(ctx context.Context, cfg config.Config, db *store.DB) []int {
	if cfg.Store.Backend == "embedded" {
		if st, err := cluster.LoadState(cfg.Data.Dir); err == nil {
			if sr, err := st.Sealed(); err == nil {
				return sr.PCRs
			}
		}
		return cfg.TPM.PCRs
	}
	if sr, err := enclave.LoadSealedRoot(ctx, db); err == nil {
		return sr.PCRs
	}
	return cfg.TPM.PCRs
}

// keyHome is where a node keeps the blobs of its TPM keys that `vault csr`
// reads and writes: the store's meta bucket (storeKeyHome), or the
// node-local state on store.backend embedded (nodeKeyHome).
type keyHome interface {
	// AK is the attestation key blob (nil: none).
	AK(ctx context.Context) (*attest.AKBlob, error)
	// ClientKey is the Vault client key blob (nil: none).
	ClientKey(ctx context.Context) (*attest.ClientKeyBlob, error)
	// PutClientKey keeps a new Vault client key blob.
	PutClientKey(ctx context.Context, b []byte) error
}

// storeKeyHome: the blobs in the store's meta bucket, the client key's
// under mk (vaultClientKeyMeta).
type storeKeyHome struct {
	db *store.DB
	mk store.MetaKey
}

func (h storeKeyHome) AK(ctx context.Context) (*attest.AKBlob, error) { return readAKBlob(ctx, h.db) }
func (h storeKeyHome) ClientKey(ctx context.Context) (*attest.ClientKeyBlob, error) {
	return readVaultClientKey(ctx, h.db, h.mk)
}
func (h storeKeyHome) PutClientKey(ctx context.Context, b []byte) error {
	return h.db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(h.mk, b) })
}

// nodeKeyHome: the blobs in the node-local state of dataDir, written
// atomically with the rest of it.
type nodeKeyHome struct {
	st      *cluster.State
	dataDir string
}

func (h nodeKeyHome) AK(context.Context) (*attest.AKBlob, error) {
	if len(h.st.AttestAK) == 0 {
		return nil, nil
	}
	return attest.ParseAKBlob(h.st.AttestAK)
}
func (h nodeKeyHome) ClientKey(context.Context) (*attest.ClientKeyBlob, error) {
	if len(h.st.VaultClientKey) == 0 {
		return nil, nil
	}
	return attest.ParseClientKeyBlob(h.st.VaultClientKey)
}
func (h nodeKeyHome) PutClientKey(_ context.Context, b []byte) error {
	h.st.VaultClientKey = b
	return h.st.Save(h.dataDir)
}

// errClientKeyNotBound explains a stored Vault client key that is not
// bound to the sealing PCRs or their current values.
func errClientKeyNotBound(blob *attest.ClientKeyBlob, pcrs []int) error {
	return fmt.Errorf("the stored Vault client key is bound to PCRs %v, the root key is sealed to %v: it was made before the key was bound to the boot state, "+
		"or the sealing PCRs changed; pass -new-key and have a certificate issued for the new key", blob.PCRs, pcrs)
}

// probeClientKey signs once with key: a key bound to PCR values of another
// boot state fails here ([attest.ErrKeyPCRsChanged]) rather than in the
// middle of a TLS handshake.
func probeClientKey(key *attest.ClientKey) error {
	d := sha256.Sum256([]byte("keywarden vault client key probe"))
	_, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
	return err
}

// ensureVaultClientKey loads the stored client key, or makes and stores
// one when there is none (or, with replace, when the stored one does not
// load in this TPM, is not bound to pcrs, or no longer signs in this boot
// state). pcrs are the PCRs the root key is sealed to. made says whether
// the key is new.
func ensureVaultClientKey(ctx context.Context, tpm transport.TPM, home keyHome, pcrs []int, replace bool) (key *attest.ClientKey, made bool, err error) {
	blob, err := home.ClientKey(ctx)
	if err != nil && !(replace && errors.Is(err, attest.ErrBadClientKeyBlob)) {
		return nil, false, err
	}
	if blob != nil && !blob.BoundTo(pcrs) && !replace {
		return nil, false, errClientKeyNotBound(blob, pcrs)
	}
	if blob != nil && blob.BoundTo(pcrs) {
		key, err := attest.LoadClientKey(ctx, tpm, blob)
		if err == nil {
			if err = probeClientKey(key); err == nil {
				return key, false, nil
			}
			_ = key.Close()
			if !replace {
				return nil, false, fmt.Errorf("the stored Vault client key no longer signs (%w); pass -new-key and have a certificate issued for the new key", err)
			}
		} else if !replace {
			return nil, false, fmt.Errorf("the stored Vault client key does not load in this TPM (%w); if the TPM was replaced or cleared, pass -new-key and have a certificate issued for the new key", err)
		}
	}
	blob, err = attest.CreateClientKey(ctx, tpm, pcrs)
	if err != nil {
		return nil, false, err
	}
	b, err := blob.MarshalBinary()
	if err != nil {
		return nil, false, err
	}
	if err := home.PutClientKey(ctx, b); err != nil {
		return nil, false, fmt.Errorf("store the Vault client key: %w", err)
	}
	key, err = attest.LoadClientKey(ctx, tpm, blob)
	return key, err == nil, err
}

// ErrVaultClientKey is what the custodian routes answer when vault.auth is
// tpm-cert and this TPM has no usable client key.
var ErrVaultClientKey = apierr.New(http.StatusBadGateway, "vault_client_key_unavailable",
	"the TPM has no usable Vault client key (none was made with `keywarden vault csr`, or the store comes from another TPM)")

// loadVaultClientKey loads the stored client key for tpm-cert at start.
// The key is a crypto.Signer over the appliance's TPM; a store copied to
// another machine carries a blob that does not load there.
func loadVaultClientKey(ctx context.Context, a *appliance) (*attest.ClientKey, *apierr.Error) {
	if a.tpm == nil {
		return nil, ErrVaultClientKey.WithMessage("vault.auth tpm-cert needs the TPM")
	}
	blob, err := a.vaultClientKeyBlob(ctx)
	if err != nil {
		return nil, ErrVaultClientKey.Wrap(err)
	}
	if blob == nil {
		return nil, ErrVaultClientKey.WithMessage("no Vault client key in the store: stop the server and run `keywarden vault csr`, then install the issued certificate")
	}
	key, err := attest.LoadClientKey(ctx, a.tpm, blob)
	if err != nil {
		return nil, ErrVaultClientKey.WithMessage("the stored Vault client key does not load in this TPM (a store from another machine, or a cleared TPM)").Wrap(err)
	}
	if err := probeClientKey(key); err != nil {
		_ = key.Close()
		return nil, ErrVaultClientKey.WithMessage("the stored Vault client key does not sign in this boot state (it is bound to other PCR values): stop the server, run `keywarden vault csr -new-key` and install the certificate issued for the new key").Wrap(err)
	}
	if pcrs := sealingPCRs(ctx, a.cfg, a.db); !blob.BoundTo(pcrs) {
		a.log.Warn("the Vault client key is not bound to the PCRs the root key is sealed to: in another boot state of this TPM it could still log in to Vault; "+
			"stop the server, run `keywarden vault csr -new-key` and install the certificate issued for the new key", "key_pcrs", blob.PCRs, "sealing_pcrs", pcrs)
	}
	return key, nil
}

// vaultClientKeyBlob is the stored client key blob (nil: none): on the
// embedded backend the node-local state's (where `vault csr` puts it),
// else, and for a node whose state has none, the store's meta under
// vaultClientKeyMeta.
func (a *appliance) vaultClientKeyBlob(ctx context.Context) (*attest.ClientKeyBlob, error) {
	if a.node != nil && len(a.node.VaultClientKey) > 0 {
		return attest.ParseClientKeyBlob(a.node.VaultClientKey)
	}
	return readVaultClientKey(ctx, a.db, vaultClientKeyMeta(a.cfg))
}

func vaultCSR(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, lf := newFlagSet("vault csr")
	fs.SetOutput(stderr)
	cn := fs.String("cn", "", "the request's common name (default: the host name)")
	nonceHex := fs.String("nonce", "", "the CA's nonce, 32 to 128 hex digits (default: a random one; the CA then cannot tell the evidence is fresh)")
	out := fs.String("out", "", "write the evidence here (default: standard output)")
	newKey := fs.Bool("new-key", false, "make a new client key when the stored one does not load in this TPM")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("vault csr: unexpected argument " + fs.Arg(0))
	}
	var nonce []byte
	if *nonceHex != "" {
		var err error
		if nonce, err = hex.DecodeString(*nonceHex); err != nil || len(nonce) < attest.MinNonce || len(nonce) > attest.MaxNonce {
			return usageError("vault csr: -nonce must be 32 to 128 hex digits")
		}
	}
	if *cn == "" {
		*cn, _ = os.Hostname()
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	if len(cfg.TPM.AttestPCRs) == 0 {
		return errors.New("vault csr: tpm.attest_pcrs is empty: set the PCRs the quote covers")
	}
	var (
		home keyHome
		db   *store.DB // nil on the embedded backend
	)
	if cfg.Store.Backend == "embedded" {
		// The node-local state, on a stopped node (its member holds its
		// log's lock while it runs).
		st, release, err := loadStoppedNode(cfg)
		if err != nil {
			return fmt.Errorf("vault csr: %w", err)
		}
		defer release()
		home = nodeKeyHome{st: st, dataDir: cfg.Data.Dir}
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return fmt.Errorf("vault csr: open TPM %s: %w", cfg.TPM.Path, err)
	}
	defer tpm.Close()
	if home == nil {
		db, err = openStoreDB(ctx, cfg, store.Options{Timeout: 2 * time.Second})
		if err != nil {
			return fmt.Errorf("vault csr: %w (stop the server first)", err)
		}
		defer db.Close()
		home = storeKeyHome{db: db, mk: vaultClientKeyMeta(cfg)}
	}
	keyPCRs := sealingPCRs(ctx, cfg, db)
	ev, made, err := makeVaultCSRIn(ctx, tpm, home, *cn, nonce, cfg.TPM.AttestPCRs, keyPCRs, *newKey)
	if err != nil {
		return fmt.Errorf("vault csr: %w", err)
	}
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out != "" {
		err = os.WriteFile(*out, b, 0o644)
	} else {
		_, err = stdout.Write(b)
	}
	if err != nil {
		return fmt.Errorf("vault csr: %w", err)
	}
	if made {
		fmt.Fprintln(stderr, "made a new Vault client key in the TPM")
	}
	if pcrs := keyPCRs; len(pcrs) > 0 {
		fmt.Fprintf(stderr, "the key signs only while PCRs %v hold their current values (the root key's sealing PCRs); give the CA their policy with -key-policy\n", pcrs)
	} else {
		fmt.Fprintln(stderr, "WARNING: the key is not bound to the boot state (the root key has no PCR policy): any OS on this TPM can use it")
	}
	fmt.Fprintln(stderr, "give the evidence to your CA: `keywarden vault verify-csr -policy FILE -ak-name HEX EVIDENCE` checks it and prints the request to sign; install the certificate as vault.tls_cert_file with vault.auth: tpm-cert")
	return nil
}

// makeVaultCSR makes (or reuses) the client key and its evidence with the
// stored attestation key. pcrs are quoted (tpm.attest_pcrs); keyPCRs are
// the PCRs the key is bound to (the root key's sealing PCRs).
func makeVaultCSR(ctx context.Context, tpm transport.TPM, db *store.DB, mk store.MetaKey, cn string, nonce []byte, pcrs, keyPCRs []int, newKey bool) (*attest.ClientKeyEvidence, bool, error) {
	return makeVaultCSRIn(ctx, tpm, storeKeyHome{db: db, mk: mk}, cn, nonce, pcrs, keyPCRs, newKey)
}

// makeVaultCSRIn is makeVaultCSR with the blobs in home.
func makeVaultCSRIn(ctx context.Context, tpm transport.TPM, home keyHome, cn string, nonce []byte, pcrs, keyPCRs []int, newKey bool) (*attest.ClientKeyEvidence, bool, error) {
	akBlob, err := home.AK(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("attestation key: %w", err)
	}
	if akBlob == nil {
		return nil, false, errors.New("no attestation key: run `keywarden init` first (on a cluster's node: start it once, it makes its attestation key)")
	}
	ak, err := attest.LoadAK(ctx, tpm, akBlob)
	if err != nil {
		return nil, false, fmt.Errorf("the stored attestation key does not load in this TPM: %w", err)
	}
	defer ak.Close()
	key, made, err := ensureVaultClientKey(ctx, tpm, home, keyPCRs, newKey)
	if err != nil {
		return nil, false, err
	}
	defer key.Close()
	ev, err := attest.MakeClientKeyEvidence(ctx, tpm, ak, key, attest.ClientKeyEvidenceOptions{CommonName: cn, Nonce: nonce, PCRs: pcrs})
	return ev, made, err
}

func vaultVerifyCSR(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vault verify-csr", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyFile := fs.String("policy", "", "policy file (YAML or JSON) of allowed PCR values; required")
	akName := fs.String("ak-name", "", "the appliance's attestation key Name (hex), as `keywarden init` printed it; required")
	nonceHex := fs.String("nonce", "", "the nonce you gave `keywarden vault csr` (hex); without it the evidence's own nonce is used and freshness is not checked")
	out := fs.String("out", "", "write the verified request (PEM) here (default: standard output)")
	keyPolicyFile := fs.String("key-policy", "", "policy file of the PCR values the key must be bound to (the appliance's sealing PCRs, tpm.pcrs); without it an unbound key is accepted with a warning")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() != 1 {
		return usageError("vault verify-csr: want one EVIDENCE file")
	}
	if *policyFile == "" || *akName == "" {
		return usageError("vault verify-csr: -policy FILE and -ak-name HEX are required (an unpinned key could be any software key)")
	}
	var opts attest.VerifyOptions
	var err error
	if opts.AKName, err = parseAKName(*akName); err != nil {
		return usageError(err.Error())
	}
	raw, err := os.ReadFile(*policyFile)
	if err != nil {
		return fmt.Errorf("vault verify-csr: %w", err)
	}
	if opts.Policy, err = attest.ParsePolicy(raw); err != nil {
		return fmt.Errorf("vault verify-csr: policy %s: %w", *policyFile, err)
	}
	if *keyPolicyFile != "" {
		raw, err := os.ReadFile(*keyPolicyFile)
		if err != nil {
			return fmt.Errorf("vault verify-csr: %w", err)
		}
		if opts.KeyPolicy, err = attest.ParsePolicy(raw); err != nil {
			return fmt.Errorf("vault verify-csr: key policy %s: %w", *keyPolicyFile, err)
		}
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("vault verify-csr: %w", err)
	}
	ev, err := attest.ParseClientKeyEvidence(data)
	if err != nil {
		return fmt.Errorf("vault verify-csr: %w", err)
	}
	opts.Nonce = ev.Nonce
	if *nonceHex != "" {
		if opts.Nonce, err = hex.DecodeString(*nonceHex); err != nil {
			return usageError("vault verify-csr: -nonce is not hex")
		}
	} else {
		fmt.Fprintln(stderr, "WARNING: no -nonce: the evidence's own nonce is used, so it may be old (the key is still the TPM's)")
	}
	facts, err := attest.VerifyClientKey(ev, opts)
	if err != nil {
		var ve *attest.VerifyError
		if errors.As(err, &ve) {
			fmt.Fprintf(stdout, "REFUSED: %s\n  %s\n", ve.Reason, ve.Error())
		}
		return fmt.Errorf("vault verify-csr: %w", err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: facts.CSR.Raw})
	if *out != "" {
		err = os.WriteFile(*out, p, 0o644)
	} else {
		_, err = stdout.Write(p)
	}
	if err != nil {
		return fmt.Errorf("vault verify-csr: %w", err)
	}
	fmt.Fprintf(stderr, "OK: the request's key (CN %q) is resident in the TPM of attestation key %x, PCRs within the policy; sign it for client authentication\n", facts.CSR.Subject.CommonName, facts.Quote.AKName)
	switch facts.KeyBinding {
	case attest.KeyBoundToPolicy:
		fmt.Fprintln(stderr, "key binding: pcr_policy (the key signs only in the boot state of the key policy)")
	case attest.KeyPolicyUnchecked:
		fmt.Fprintln(stderr, "key binding: policy_unchecked (the key is bound by a policy; pass -key-policy to check it is the appliance's PCRs)")
	default:
		fmt.Fprintln(stderr, "WARNING: key binding: not_bound (the key signs in any boot state of this TPM: dev mode, tpm.allow_no_pcr_policy, or a key made before binding; have the appliance run `keywarden vault csr -new-key`)")
	}
	return nil
}
