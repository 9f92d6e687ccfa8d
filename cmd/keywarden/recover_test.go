package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

// Tests here use the one in-process simulator (serialized: no t.Parallel)
// or swtpm.

const (
	oldSeed = 1001 // the lost host's TPM
	newSeed = 2002 // the new host's TPM
)

// rkOperator is one operator with an age identity file.
type rkOperator struct {
	id        *age.X25519Identity
	recipient string
	file      string
}

func newRKOperators(t *testing.T, dir string, n int) []rkOperator {
	t.Helper()
	var out []rkOperator
	for i := range n {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, fmt.Sprintf("operator-%d.key", i+1))
		body := fmt.Sprintf("# created: test\n# public key: %s\n%s\n", id.Recipient(), id)
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, rkOperator{id: id, recipient: id.Recipient().String(), file: f})
	}
	return out
}

func recipientList(ops []rkOperator) listFlag {
	var l listFlag
	for _, o := range ops {
		l = append(l, o.recipient)
	}
	return l
}

// writeConfigFile writes a YAML configuration and returns its path.
func writeConfigFile(t *testing.T, dir, body string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "keywarden.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// devConfig is a dev-mode configuration on the simulator with seed.
func devConfig(t *testing.T, dir string, seed int64) (string, config.Config) {
	t.Helper()
	p := writeConfigFile(t, dir, fmt.Sprintf("data:\n  dir: %s\ntpm:\n  simulator_seed: %d\n", filepath.Join(dir, "data"), seed))
	c, _, err := loadConfig([]string{"-config", p}, true)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// oldHost is what the lost host left behind.
type oldHost struct {
	backup   string
	shares   []string // share files, index order
	rootID   string
	keys     map[enclave.Owner][]byte
	deleted  enclave.Owner
	sealed   *enclave.SealedRoot
	sharesOp []rkOperator
}

// makeOldHost runs init (root key + the init steps of this file) on tpm,
// stores keys, deletes one, and writes a backup.
func makeOldHost(t *testing.T, tpm transport.TPM, cfg config.Config, dir string, ops []rkOperator) *oldHost {
	t.Helper()
	ctx := context.Background()
	if err := os.MkdirAll(cfg.Data.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(cfg.Data.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sharesDir := filepath.Join(dir, "shares")
	settings := recoverySettingsFor(cfg, initFlagValues{recipients: recipientList(ops), threshold: 2, sharesDir: sharesDir})
	if err := preflightInit(settings); err != nil {
		t.Fatal(err)
	}
	root, raw, err := enclave.Initialize(ctx, tpm, db, enclave.InitOptions{PCRs: cfg.TPM.PCRs})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	defer raw.Wipe()
	ic := initContext{cfg: cfg, tpm: tpm, db: db, root: root, raw: raw}
	if err := rollbackInitStep(ctx, ic); err != nil {
		t.Fatal(err)
	}
	if err := recoveryInitStep(ctx, ic, settings); err != nil {
		t.Fatal(err)
	}
	h := &oldHost{backup: filepath.Join(dir, "backup.db"), rootID: root.RootID(), keys: map[enclave.Owner][]byte{}, sharesOp: ops}
	info, err := enclave.LoadRecovery(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Shares {
		p := filepath.Join(sharesDir, s.FileName())
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, s.File()) {
			t.Fatalf("share file %s: %v", p, err)
		}
		h.shares = append(h.shares, p)
	}
	// The appliance writes with its rollback state open: every change is
	// in the record digest.
	rb, err := enclave.OpenRollback(ctx, tpm, db, root, enclave.RollbackOptions{Dev: cfg.Dev})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	c := enclave.NewCustody(db, root, enclave.CustodyOptions{})
	for i := range 4 {
		o := enclave.UserOwner(fmt.Sprintf("u%d", i))
		k := make([]byte, 32)
		rand.Read(k)
		if _, err := c.PutKey(ctx, o, "PASSKEY", k, enclave.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		h.keys[o] = k
	}
	h.deleted = enclave.UserOwner("u3")
	if _, err := c.DeleteOwner(ctx, h.deleted); err != nil {
		t.Fatal(err)
	}
	delete(h.keys, h.deleted)
	rb.BeforeBackup()
	f, err := os.Create(h.backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if h.sealed, err = enclave.LoadSealedRoot(ctx, db); err != nil {
		t.Fatal(err)
	}
	return h
}

// checkKeysRelease opens the store at cfg on tpm and reads every key.
func checkKeysRelease(t *testing.T, tpm transport.TPM, cfg config.Config, h *oldHost) {
	t.Helper()
	db, err := store.Open(cfg.Data.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkKeysInDB(t, tpm, db, h)
}

// checkKeysInDB unseals the root key of db on tpm and reads every key.
func checkKeysInDB(t *testing.T, tpm transport.TPM, db *store.DB, h *oldHost) {
	t.Helper()
	ctx := context.Background()
	root, err := enclave.Unseal(ctx, tpm, db)
	if err != nil {
		t.Fatalf("the recovered store does not unseal on the new TPM: %v", err)
	}
	defer root.Close()
	if root.RootID() != h.rootID {
		t.Fatal("another root key")
	}
	c := enclave.NewCustody(db, root, enclave.CustodyOptions{})
	for o, k := range h.keys {
		got, err := c.GetKey(ctx, o, "PASSKEY")
		if err != nil || !bytes.Equal(got.Reveal(), k) {
			t.Fatalf("%s does not release after recovery: %v", o, err)
		}
	}
	if _, err := c.GetKey(ctx, h.deleted, "PASSKEY"); err == nil {
		t.Fatal("a deleted key came back")
	}
}

func auditContains(t *testing.T, cfg config.Config, action string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(cfg.Audit.Dir, "audit-*.jsonl"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(`"`+action+`"`)) {
			return true
		}
	}
	return false
}

func TestPreflightInitRequiresRecipients(t *testing.T) {
	ops := newRKOperators(t, t.TempDir(), 3)
	cfg := config.Defaults()
	for _, tc := range []struct {
		name       string
		recipients listFlag
		threshold  int
		single     bool
		ok         bool
	}{
		{"none", nil, 0, false, false},
		{"2 of 3", recipientList(ops), 2, false, true},
		{"1 of 3", recipientList(ops), 1, false, false},
		{"one operator", recipientList(ops[:1]), 0, false, false},
		{"one operator, explicit", recipientList(ops[:1]), 0, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := recoverySettingsFor(cfg, initFlagValues{recipients: tc.recipients, threshold: tc.threshold, single: tc.single})
			if err := preflightInit(s); (err == nil) != tc.ok {
				t.Fatalf("preflightInit = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestRecoverCommand is the disaster-recovery path through the CLI: the
// old host's TPM is gone; `keywarden recover` on a new host (a simulator
// with another seed) rebuilds the root key from 2 of 3 shares.
func TestRecoverCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ops := newRKOperators(t, dir, 3)
	_, oldCfg := devConfig(t, filepath.Join(dir, "old"), oldSeed)
	oldCfg.Dev = false // init runs outside dev mode
	sim, err := tpmsim.Open(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	h := makeOldHost(t, sim, oldCfg, dir, ops)
	sim.Close() // the old TPM is destroyed

	// A second appliance's shares, for the same operators.
	otherDir := filepath.Join(dir, "other")
	_, otherCfg := devConfig(t, otherDir, oldSeed)
	sim, err = tpmsim.Open(oldSeed + 1)
	if err != nil {
		t.Fatal(err)
	}
	other := makeOldHost(t, sim, otherCfg, otherDir, ops)
	sim.Close()

	newCfgFile, newCfg := devConfig(t, filepath.Join(dir, "new"), newSeed)
	doRecover := func(extra ...string) error {
		return run(ctx, append([]string{"recover", "-dev", "-config", newCfgFile, "-backup", h.backup}, extra...))
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"one share", []string{"-share", h.shares[0], "-identity", ops[0].file}, "not enough recovery shares"},
		{"share of another appliance", []string{"-share", h.shares[0], "-share", other.shares[1], "-identity", ops[0].file, "-identity", ops[1].file}, "do not belong together"},
		{"wrong identity", []string{"-share", h.shares[0], "-share", h.shares[1], "-identity", ops[0].file, "-identity", ops[2].file}, "none of the given age identities"},
		{"another appliance's full set", []string{"-share", other.shares[0], "-share", other.shares[1], "-identity", ops[0].file, "-identity", ops[1].file}, "does not match"},
		{"no identity", []string{"-share", h.shares[0]}, "-identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := doRecover(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if _, err := os.Stat(newCfg.Data.DB); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("a refused recovery left a store behind")
			}
		})
	}

	// Shares 1 and 3, with their operators' identities.
	if err := doRecover("-share", h.shares[0], "-share", h.shares[2], "-identity", ops[0].file, "-identity", ops[2].file); err != nil {
		t.Fatal(err)
	}
	if !auditContains(t, newCfg, actionRecover) {
		t.Fatal("the recovery is not in the audit log")
	}
	sim, err = tpmsim.Open(newSeed)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := enclave.UnsealRoot(ctx, sim, h.sealed); err == nil {
		k.Wipe()
		t.Fatal("the old host's sealed root key unsealed on the new TPM")
	}
	checkKeysRelease(t, sim, newCfg, h)
	sim.Close()

	// An existing store is not overwritten without -force.
	err = doRecover("-share", h.shares[0], "-share", h.shares[1], "-identity", ops[0].file, "-identity", ops[1].file)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second recover: err = %v", err)
	}
	// With -force, and the shares taken from the backup's own record.
	if err := doRecover("-force", "-identity", ops[1].file, "-identity", ops[2].file); err != nil {
		t.Fatal(err)
	}
	kept, _ := filepath.Glob(newCfg.Data.DB + ".replaced-*")
	if len(kept) != 1 {
		t.Fatalf("the replaced store was not kept: %v", kept)
	}
	sim, err = tpmsim.Open(newSeed)
	if err != nil {
		t.Fatal(err)
	}
	checkKeysRelease(t, sim, newCfg, h)
	sim.Close()

	t.Run("reseal", func(t *testing.T) {
		if err := run(ctx, []string{"reseal", "-dev", "-config", newCfgFile}); err == nil {
			t.Fatal("reseal without -pcrs ran")
		}
		if err := run(ctx, []string{"reseal", "-dev", "-config", newCfgFile, "-pcrs", "16"}); err != nil {
			t.Fatal(err)
		}
		if !auditContains(t, newCfg, actionReseal) {
			t.Fatal("reseal not audited")
		}
		sim, err := tpmsim.Open(newSeed)
		if err != nil {
			t.Fatal(err)
		}
		defer sim.Close()
		db, err := store.Open(newCfg.Data.DB, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		s, _ := enclave.LoadSealedRoot(ctx, db)
		if len(s.PCRs) != 1 || s.PCRs[0] != 16 {
			t.Fatalf("sealed to %v", s.PCRs)
		}
		_, err = tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{7}, 32)}}},
		}.Execute(sim)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := enclave.Unseal(ctx, sim, db); !errors.Is(err, enclave.ErrPolicyMismatch) {
			t.Fatalf("after extending PCR 16: err = %v", err)
		}
	})

	t.Run("reshare", func(t *testing.T) {
		newOps := newRKOperators(t, t.TempDir(), 2)
		sharesDir := filepath.Join(dir, "reshared")
		err := run(ctx, []string{"recovery", "reshare", "-dev", "-config", newCfgFile,
			"-recipient", newOps[0].recipient, "-recipient", newOps[1].recipient, "-threshold", "2", "-shares-dir", sharesDir})
		if err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(sharesDir, "*.age"))
		if len(files) != 2 {
			t.Fatalf("%d share files", len(files))
		}
		var plain [][]byte
		for _, f := range files {
			b, _ := os.ReadFile(f)
			p, err := enclave.DecryptShare(b, newOps[0].id, newOps[1].id)
			if err != nil {
				t.Fatal(err)
			}
			plain = append(plain, p.Reveal())
		}
		k, err := enclave.CombineShares(plain)
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := enclave.RootID(k); id != h.rootID {
			t.Fatal("reshared shares rebuild another key")
		}
		if !auditContains(t, newCfg, actionReshare) {
			t.Fatal("reshare not audited")
		}
		if err := run(ctx, []string{"recovery", "reshare", "-dev", "-config", newCfgFile, "-recipient", newOps[0].recipient}); err == nil {
			t.Fatal("reshare to a single recipient without -single-share ran")
		}
		// recovery status reads the new record.
		out := captureStdout(t, func() error { return run(ctx, []string{"recovery", "status", "-dev", "-config", newCfgFile}) })
		if !strings.Contains(out, newOps[1].recipient) || !strings.Contains(out, h.rootID) {
			t.Fatalf("recovery status:\n%s", out)
		}
	})
}

func captureStdout(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	errc := make(chan error, 1)
	go func() { errc <- fn(); w.Close() }()
	b, _ := io.ReadAll(r)
	os.Stdout = old
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRollbackServeAndAccept: back up, delete a user, restore the old
// backup → serve's rollback check refuses to start; `keywarden rollback
// accept` (audited) lets it start. On swtpm, a TPM outside this process, as
// in production.
func TestRollbackServeAndAccept(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sw := swtpmtest.Start(t, swtpmtest.Options{StateDir: filepath.Join(dir, "tpmstate")})
	cfgFile := writeConfigFile(t, dir, fmt.Sprintf("listen:\n  plain_http: true\ndata:\n  dir: %s\ntpm:\n  path: %s\n  pcrs: [7]\n", filepath.Join(dir, "data"), sw.Spec))
	cfg, _, err := loadConfig([]string{"-config", cfgFile}, false)
	if err != nil {
		t.Fatal(err)
	}
	openSW := func() transport.TPMCloser {
		tpm, err := tpmdev.Open(ctx, sw.Spec)
		if err != nil {
			t.Fatalf("%v\n%s", err, sw.Log())
		}
		return tpm
	}
	ops := newRKOperators(t, dir, 2)
	tpm := openSW()
	h := makeOldHost(t, tpm, cfg, dir, ops) // the backup has u0..u2

	// The appliance runs: a user is deleted after the backup.
	a := openTestAppliance(t, tpm, cfg)
	rb, err := openApplianceRollback(ctx, a, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enclave.NewCustody(a.db, a.root, enclave.CustodyOptions{}).DeleteOwner(ctx, enclave.UserOwner("u0")); err != nil {
		t.Fatal(err)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	a.Close()

	// The old backup is put back.
	if err := os.Remove(cfg.Data.DB); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(t, h.backup, cfg.Data.DB); err != nil {
		t.Fatal(err)
	}
	a = openTestAppliance(t, tpm, cfg)
	var opts server.Options
	if err := rollbackWireStep(ctx, a, &opts, false); !errors.Is(err, enclave.ErrRolledBack) {
		t.Fatalf("serve on a restored old backup: err = %v, want ErrRolledBack", err)
	}
	a.Close()
	tpm.Close()

	// The operator accepts it, once, audited.
	if err := run(ctx, []string{"rollback", "accept", "-config", cfgFile}); err != nil {
		t.Fatal(err)
	}
	if !auditContains(t, cfg, actionRollbackAccepted) {
		t.Fatal("the override is not in the audit log")
	}
	tpm = openSW()
	defer tpm.Close()
	a = openTestAppliance(t, tpm, cfg)
	defer a.Close()
	opts = server.Options{}
	if err := rollbackWireStep(ctx, a, &opts, false); err != nil {
		t.Fatalf("serve after rollback accept: %v", err)
	}
	if len(opts.Degraded) == 0 {
		t.Fatal("no rollback readiness check")
	}
	for _, c := range opts.Degraded {
		if err := c.Run(ctx); err != nil {
			t.Errorf("readiness check %s: %v", c.Name, err)
		}
	}
}

// TestServeAcceptRollbackFlag: serve's override path records an audit line
// before serving.
func TestServeAcceptRollbackFlag(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, cfg := devConfig(t, dir, oldSeed)
	cfg.Dev = false
	sim, err := tpmsim.Open(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	h := makeOldHost(t, sim, cfg, dir, newRKOperators(t, dir, 2))
	a := openTestAppliance(t, sim, cfg)
	rb, err := openApplianceRollback(ctx, a, false)
	if err != nil {
		t.Fatal(err)
	}
	// A change after the backup (every change advances the generation).
	if _, err := enclave.NewCustody(a.db, a.root, enclave.CustodyOptions{}).DeleteOwner(ctx, enclave.UserOwner("u0")); err != nil {
		t.Fatal(err)
	}
	rb.Close()
	a.Close()
	os.Remove(cfg.Data.DB)
	if err := copyFile(t, h.backup, cfg.Data.DB); err != nil {
		t.Fatal(err)
	}
	a = openTestAppliance(t, sim, cfg)
	defer a.Close()
	alog, err := audit.Open(ctx, audit.Options{Dir: cfg.Audit.Dir, AnchorKey: a.root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	a.audit = alog
	a.closers = append(a.closers, func() { alog.Close(ctx) })
	if _, err := openApplianceRollback(ctx, a, false); !errors.Is(err, enclave.ErrRolledBack) {
		t.Fatalf("err = %v, want ErrRolledBack", err)
	}
	rb, err = openApplianceRollback(ctx, a, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	if rb.Status().Event != enclave.RollbackOverride {
		t.Fatalf("status: %+v", rb.Status())
	}
	alog.Close(ctx)
	if !auditContains(t, cfg, actionRollbackAccepted) {
		t.Fatal("the override is not in the audit log")
	}
}

// openTestAppliance opens the store and the root key the way serve does
// (without listeners and audit log).
func openTestAppliance(t *testing.T, tpm transport.TPM, cfg config.Config) *appliance {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(cfg.Data.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := enclave.Unseal(ctx, tpm, db)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	a := &appliance{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tpm: tpmdev.NewCounting(tpm), db: db, root: root}
	a.closers = append(a.closers, func() { db.Close() }, root.Close)
	return a
}

// TestServeRefusesSplicedRecord: a key overwritten while serving, then its
// older record (from the backup) copied into the stopped appliance's file
// with the store API: serve refuses to start, naming the splice, so the
// old key is never released; the audited override accepts it.
func TestServeRefusesSplicedRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, cfg := devConfig(t, dir, oldSeed)
	cfg.Dev = false
	sim, err := tpmsim.Open(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	h := makeOldHost(t, sim, cfg, dir, newRKOperators(t, dir, 2))
	a := openTestAppliance(t, sim, cfg)
	rb, err := openApplianceRollback(ctx, a, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enclave.NewCustody(a.db, a.root, enclave.CustodyOptions{}).PutKey(ctx, enclave.UserOwner("u0"), "PASSKEY", []byte("u0-version-2"), enclave.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rb.Close()
	a.Close()

	k := store.Key("user:u0", "PASSKEY")
	bk, err := store.Open(h.backup, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var old []byte
	if err := bk.View(ctx, func(tx *store.Tx) (err error) { old, err = tx.Get(store.BucketKeys, k); return }); err != nil {
		t.Fatal(err)
	}
	bk.Close()
	live, err := store.Open(cfg.Data.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, k, old) }); err != nil {
		t.Fatal(err)
	}
	live.Close()

	a = openTestAppliance(t, sim, cfg)
	defer a.Close()
	var opts server.Options
	err = rollbackWireStep(ctx, a, &opts, false)
	if err == nil {
		got, gerr := enclave.NewCustody(a.db, a.root, enclave.CustodyOptions{}).GetKey(ctx, enclave.UserOwner("u0"), "PASSKEY")
		if gerr == nil && bytes.Equal(got.Reveal(), h.keys[enclave.UserOwner("u0")]) {
			t.Fatal("serve started on a spliced store and released the old key version")
		}
		t.Fatalf("serve started on a spliced store (release: %v)", gerr)
	}
	if !errors.Is(err, enclave.ErrRecordsAltered) || !strings.Contains(err.Error(), "rollback accept") {
		t.Fatalf("serve on a spliced store: err = %v, want ErrRecordsAltered naming `rollback accept`", err)
	}
	alog, err := audit.Open(ctx, audit.Options{Dir: cfg.Audit.Dir, AnchorKey: a.root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	a.audit = alog
	rb, err = openApplianceRollback(ctx, a, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	if st := rb.Status(); st.Event != enclave.RollbackOverride {
		t.Fatalf("status: %+v", st)
	}
	alog.Close(ctx)
	if !auditContains(t, cfg, actionRollbackAccepted) {
		t.Fatal("the override is not in the audit log")
	}
}

// copyFile puts a backup in place the way an operator would (cp).
func copyFile(t *testing.T, from, to string) error {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}

// TestRecoverOntoNewHostAuditVerifies: the old host recorded its audit
// head in the store, so the backup carries it; its audit files stay on the
// lost host. Recovered onto a new host, the store must not hold that head
// (the new host's log would fail `audit verify` forever as "truncated"):
// recover forgets it and writes its seq and hash into its own audit line.
func TestRecoverOntoNewHostAuditVerifies(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ops := newRKOperators(t, dir, 2)
	_, oldCfg := devConfig(t, filepath.Join(dir, "old"), oldSeed)
	oldCfg.Dev = false
	sim, err := tpmsim.Open(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	h := makeOldHost(t, sim, oldCfg, dir, ops)

	// The old host serves: its audit log records its head in the store;
	// the backup is taken after.
	db, err := store.Open(oldCfg.Data.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := enclave.Unseal(ctx, sim, db)
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(ctx, audit.Options{Dir: oldCfg.Audit.Dir, AnchorKey: root.Subkey("audit-anchor"), Heads: audit.StoreHeads(db), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := alog.Record(ctx, audit.Event{Action: audit.ActionRelease, Outcome: audit.OutcomeSuccess, Owner: fmt.Sprintf("user:%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := alog.Close(ctx); err != nil {
		t.Fatal(err)
	}
	oldSeq, oldHash := alog.Head()
	if err := os.Remove(h.backup); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(h.backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	root.Close()
	db.Close()
	sim.Close() // the old host is lost, its audit files with it

	newCfgFile, newCfg := devConfig(t, filepath.Join(dir, "new"), newSeed)
	if err := run(ctx, []string{"recover", "-dev", "-config", newCfgFile, "-backup", h.backup,
		"-share", h.shares[0], "-share", h.shares[1], "-identity", ops[0].file, "-identity", ops[1].file}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KEYWARDEN_DEV", "1")
	out, err := auditVerifyOutput(t, newCfgFile)
	if err != nil {
		t.Fatalf("audit verify on the new host after recover: %v\n%s", err, out)
	}
	// The old head is on record in the recover line.
	var found bool
	files, _ := filepath.Glob(filepath.Join(newCfg.Audit.Dir, "audit-*.jsonl"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"`+actionRecover+`"`) &&
				strings.Contains(line, fmt.Sprintf(`"previous_audit_head_seq":"%d"`, oldSeq)) &&
				strings.Contains(line, `"previous_audit_head_hash":"`+oldHash+`"`) {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("the recover line does not name the old audit head (seq %d, %s)", oldSeq, oldHash)
	}
}
