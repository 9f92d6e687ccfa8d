package main

// Attestation: the attestation key's lifecycle and the /v1/attestation and
// /v1/appliance-key routes (server/attestapi).
//
// The key is made at `keywarden init` (and by `keywarden recover` on the
// new TPM); its blob (attest.AKBlob, not secret) is kept in the store's
// meta bucket under "attest_ak". At start it is loaded once; when it is
// missing (dev mode, or a store initialised before attestation existed) it
// is made then. On the embedded backend the blob is in the node-local
// state instead (package cluster): every node has its own. Its Name is printed at init and logged at every start:
// verifiers pin it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/attestapi"
	"github.com/keywarden/keywarden/store"
)

// readAKBlob returns the stored attestation key blob, or nil when there is
// none.
func readAKBlob(ctx context.Context, db *store.DB) (*attest.AKBlob, error) {
	var b []byte
	err := db.View(ctx, func(tx *store.Tx) (err error) { b, err = tx.GetMeta(store.MetaAttestAK); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return attest.ParseAKBlob(b)
}

// newAKBlob makes an attestation key in tpm and stores its blob, replacing
// any other.
func newAKBlob(ctx context.Context, tpm transport.TPM, db *store.DB) (*attest.AKBlob, error) {
	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		return nil, err
	}
	b, err := blob.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if err := db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(store.MetaAttestAK, b) }); err != nil {
		return nil, fmt.Errorf("store the attestation key: %w", err)
	}
	return blob, nil
}

// readAK reads the appliance's attestation key blob: from the node-local
// state on the embedded backend (each node has its own TPM and key), from
// the store's meta otherwise.
func (a *appliance) readAK(ctx context.Context) (*attest.AKBlob, error) {
	if a.node == nil {
		return readAKBlob(ctx, a.db)
	}
	if len(a.node.AttestAK) == 0 {
		return nil, nil
	}
	return attest.ParseAKBlob(a.node.AttestAK)
}

// newAK makes an attestation key and keeps its blob where readAK reads it.
func (a *appliance) newAK(ctx context.Context) (*attest.AKBlob, error) {
	if a.node == nil {
		return newAKBlob(ctx, a.tpm, a.db)
	}
	blob, err := attest.CreateAK(ctx, a.tpm)
	if err != nil {
		return nil, err
	}
	b, err := blob.MarshalBinary()
	if err != nil {
		return nil, err
	}
	a.node.AttestAK = b
	if err := a.node.Save(a.cfg.Data.Dir); err != nil {
		return nil, fmt.Errorf("store the attestation key in the node-local state: %w", err)
	}
	return blob, nil
}

// ensureAK keeps a stored key that loads in tpm, or makes a new one (none
// stored, or one of another TPM). made says which.
func ensureAK(ctx context.Context, tpm transport.TPM, db *store.DB) (blob *attest.AKBlob, made bool, err error) {
	blob, err = readAKBlob(ctx, db)
	if err != nil && !errors.Is(err, attest.ErrBadAKBlob) {
		return nil, false, err
	}
	if blob != nil {
		ak, lerr := attest.LoadAK(ctx, tpm, blob)
		if lerr == nil {
			return blob, false, ak.Close()
		}
	}
	blob, err = newAKBlob(ctx, tpm, db)
	return blob, err == nil, err
}

// printAKName tells the operator the key's Name, the value to pin.
func printAKName(w io.Writer, blob *attest.AKBlob, made bool) error {
	name, err := blob.Name()
	if err != nil {
		return err
	}
	verb := "kept"
	if made {
		verb = "created"
	}
	fmt.Fprintf(w, "attestation key %s; its name (pin it: keywarden attest verify --ak-name …):\n  %x\n", verb, name)
	return nil
}

func initAttestationKey(ctx context.Context, c initContext) error {
	blob, made, err := ensureAK(ctx, c.tpm, c.db)
	if err != nil {
		return fmt.Errorf("attestation key: %w", err)
	}
	return printAKName(os.Stderr, blob, made)
}

// recoverAttestationKey makes a new key on the new TPM: the old TPM's blob
// does not load here, and verifiers must re-pin.
func recoverAttestationKey(ctx context.Context, c initContext) error {
	blob, err := newAKBlob(ctx, c.tpm, c.db)
	if err != nil {
		return fmt.Errorf("attestation key: %w", err)
	}
	fmt.Fprintln(os.Stderr, "this is a new TPM: verifiers must pin the new attestation key name")
	return printAKName(os.Stderr, blob, true)
}

// wireAttestation loads the attestation key, reads the EK certificates and
// adds the attestation routes. A key that cannot be had leaves the routes
// answering 503 attestation_unavailable and readiness "degraded"; it never
// stops the appliance.
func wireAttestation(ctx context.Context, a *appliance, opts *server.Options) error {
	o := attestapi.Options{
		TPM: a.tpm, PCRs: a.cfg.TPM.AttestPCRs, Logger: a.log,
		Version: versionString(), BinaryDigest: binaryDigest(),
		EventLogPath: eventLogPath(a.cfg.TPM.Path),
	}
	k, err := a.root.HPKEKey()
	if err != nil {
		return fmt.Errorf("attestation: appliance HPKE key: %w", err)
	}
	o.HPKEPublicKey = k.PublicKey().Bytes()

	ak, why := startAK(ctx, a)
	if ak != nil {
		a.closers = append(a.closers, func() { _ = ak.Close() })
		o.AK = ak
		a.log.Info("attestation key loaded", "name", fmt.Sprintf("%x", ak.Name()), "pcrs", o.PCRs)
	} else {
		o.Unavailable = why
		a.log.Error("attestation unavailable: GET /v1/attestation answers 503", "reason", why)
		opts.Degraded = append(opts.Degraded, server.Check{Name: "attestation", Run: func(context.Context) error {
			return errors.New(why)
		}})
	}
	o.Keys, o.KeysUnavailable = a.certifySigningKey(ctx, ak)
	if ak != nil {
		certs, chain, err := attest.ReadEKCertificates(ctx, a.tpm)
		if err != nil {
			a.log.Warn("attestation: cannot read the EK certificates; evidence goes without them", "err", err)
		}
		o.EKCertificates, o.EKChain = certs, chain
	}

	if !a.cfg.Listen.PlainHTTP {
		// The appliance terminates TLS itself, so clients may ask for its
		// TLS key to be bound: the listeners' own reloader, so both serve
		// one key.
		r, err := a.tlsReloader()
		if err != nil {
			return err
		}
		o.TLSPublicKey = func() ([]byte, error) { return attestapi.SPKI(r.Current()) }
	}

	h, err := attestapi.New(o)
	if err != nil {
		return fmt.Errorf("attestation: %w", err)
	}
	opts.Attestation = h
	return nil
}

// startAK loads the stored attestation key, making it first when none is
// stored. It returns nil and the reason when there is no usable key.
func startAK(ctx context.Context, a *appliance) (*attest.AK, string) {
	if len(a.cfg.TPM.AttestPCRs) == 0 {
		return nil, "tpm.attest_pcrs is empty: set the PCRs quotes cover"
	}
	blob, err := a.readAK(ctx)
	if err != nil && !(a.cfg.Dev && errors.Is(err, attest.ErrBadAKBlob)) {
		return nil, fmt.Sprintf("cannot read the stored attestation key: %v", err)
	}
	if blob != nil {
		ak, err := attest.LoadAK(ctx, a.tpm, blob)
		if err == nil {
			return ak, ""
		}
		if !a.cfg.Dev {
			return nil, fmt.Sprintf("the stored attestation key does not load in this TPM (%v); if the TPM was replaced or cleared, stop the server and run `keywarden attest new-ak`", err)
		}
		a.log.Warn("dev mode: the stored attestation key does not load (another simulator seed?); making a new one", "err", err)
	}
	blob, err = a.newAK(ctx)
	if err != nil {
		return nil, fmt.Sprintf("cannot make an attestation key: %v", err)
	}
	name, _ := blob.Name()
	a.log.Warn("attestation key made at start (none was stored): verifiers must pin its name, learnt from a trusted channel", "name", fmt.Sprintf("%x", name))
	ak, err := attest.LoadAK(ctx, a.tpm, blob)
	if err != nil {
		return nil, fmt.Sprintf("cannot load the new attestation key: %v", err)
	}
	return ak, ""
}

// eventLogPath is the firmware's TCG event log when the TPM is the host's
// own; a simulator or swtpm has PCRs that log does not describe.
func eventLogPath(tpmPath string) string {
	if tpmPath == "" || strings.HasPrefix(tpmPath, "/dev/") {
		return attest.DefaultEventLogPath
	}
	return ""
}
