package main

// keywarden recover -backup FILE -identity KEYFILE… [-share FILE…] [-force] [-pcrs LIST] [-accept-rollback]
//
// FILE is a backup from `keywarden backup`: a bbolt store file (a node on
// bbolt) or an etcd dump (a node on etcd). A bbolt file restores into the
// bbolt store of data.dir; an etcd dump into either backend (store.backend
// says which): a bbolt file, or an empty etcd prefix.
//
// rebuilds the root key from T recovery shares and a backup on a new host
// (cmdRecover lists its steps). It also takes -config FILE, and -dev to run
// on dev mode's embedded defaults (simulated TPM), and works on the store
// file directly: stop the server first (bbolt's lock refuses a second
// process anyway). The other offline commands (reseal, recovery, rollback
// accept) are in offline.go.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"filippo.io/age"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// Audit actions of these commands.
const (
	actionRecover          = "admin_recover"
	actionReseal           = "admin_reseal"
	actionReshare          = "admin_recovery_reshare"
	actionRollbackAccepted = "rollback_accepted"
)

// cmdRecover rebuilds the root key from T shares and a backup on a new
// host: the backup becomes the store and the root key is sealed to this
// host's TPM. In this order: stage a copy of the backup next to the store
// (openRecoverTarget: a bbolt backup or an etcd dump into a bbolt file, or
// an etcd dump into an empty etcd prefix) → open the copy → combine the shares → check the key against the
// backup's record → open the TPM → seal the key to it → rollback check →
// a new attestation key → forget the old host's audit head (when this
// host's log does not hold it) → the audit lines → the copy takes the
// store's place (the old store kept beside it). Until the last step
// nothing outside the copy has changed.
func cmdRecover(ctx context.Context, args []string) error {
	f, err := parseRecoverFlags(args)
	if err != nil {
		return err
	}
	cfg, err := f.lifecycle.load()
	if err != nil {
		return err
	}
	if cfg.Store.Backend == "embedded" {
		return errRecoverEmbedded
	}
	pcrs, err := f.sealPCRs(cfg)
	if err != nil {
		return err
	}
	ids, err := readIdentities(f.identities)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	target, err := openRecoverTarget(ctx, cfg, f.backup, f.force)
	if err != nil {
		return err
	}
	defer target.abort()
	db := target.db
	key, used, err := combineShares(ctx, db, f.shares, ids)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer key.Wipe()
	if err := enclave.VerifyRecoveredRoot(ctx, db, key); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return fmt.Errorf("recover: open TPM %s: %w", cfg.TPM.Path, err)
	}
	defer tpm.Close()
	if err := enclave.ResealKey(ctx, tpm, db, key, pcrs); err != nil {
		return fmt.Errorf("recover: seal the root key to this TPM: %w", err)
	}
	root, err := enclave.NewRoot(key)
	if err != nil {
		return err
	}
	defer root.Close()
	rst, err := recoverRollback(ctx, tpm, db, root, f.acceptRollback, cfg.Dev, cfg.Rollback.Node)
	if err != nil {
		return err
	}
	// The attestation key is made anew: the old TPM's blob does not load here.
	if err := recoverAttestationKey(ctx, initContext{cfg: cfg, tpm: tpm, db: db, root: root, raw: key}); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	oldHead, err := forgetForeignAuditHead(ctx, cfg, db, root)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	evs := recoverAudit(f.backup, root.RootID(), used, cfg.TPM.Path, pcrs, rst, oldHead)
	if err := operatorAudit(ctx, cfg, root, evs...); err != nil {
		return fmt.Errorf("recover: %w (nothing was replaced)", err)
	}
	kept, err := target.commit()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if kept != "" {
		fmt.Fprintf(os.Stderr, "recover: the previous store is kept as %s\n", kept)
	}
	fmt.Fprintf(os.Stderr, "recovered: root key %s rebuilt from shares %s, sealed to %s (PCRs %v); store at %s; rollback counter: %s\n",
		root.RootID(), used, cfg.TPM.Path, pcrs, target.where, rst.Detail)
	fmt.Fprintln(os.Stderr, "next: make a new attestation key on this TPM, and check `keywarden recovery status`")
	warnNoPCRPolicy(cfg, pcrs)
	return nil
}

// recoverFlags are recover's command line.
type recoverFlags struct {
	lifecycle          *lifecycleFlags
	backup             string
	shares, identities listFlag
	force              bool
	pcrs               string
	pcrsSet            bool
	acceptRollback     bool
}

func parseRecoverFlags(args []string) (*recoverFlags, error) {
	fs, lf := newFlagSet("recover")
	f := &recoverFlags{lifecycle: lf}
	fs.StringVar(&f.backup, "backup", "", "backup file (from `keywarden backup`)")
	fs.Var(&f.shares, "share", "a recovery share file; repeat (default: the shares recorded in the backup)")
	fs.Var(&f.identities, "identity", "an operator's age identity file (age-keygen); repeat")
	fs.BoolVar(&f.force, "force", false, "replace an existing store (it is kept as <db>.replaced-<time>)")
	fs.StringVar(&f.pcrs, "pcrs", "", "PCRs to seal the root key to (default tpm.pcrs; \"none\" for none)")
	fs.BoolVar(&f.acceptRollback, "accept-rollback", false, "accept a backup older than this TPM's rollback counter (same host; audited)")
	if err := fs.Parse(args); err != nil {
		return nil, usageError(err.Error())
	}
	if f.backup == "" || len(f.identities) == 0 {
		return nil, usageError("recover: -backup FILE and at least one -identity FILE are required")
	}
	f.pcrsSet = flagSet(fs, "pcrs")
	return f, nil
}

// sealPCRs are the PCRs to seal to: -pcrs, else tpm.pcrs.
func (f *recoverFlags) sealPCRs(cfg config.Config) ([]int, error) {
	if !f.pcrsSet {
		return cfg.TPM.PCRs, nil
	}
	return parsePCRs(f.pcrs)
}

// stageBackup copies the backup next to the store (store.StageRestore):
// an existing store is replaced only with -force.
func stageBackup(backup, target string, force bool) (*store.Restore, error) {
	staged, err := store.StageRestore(backup, target, store.RestoreOptions{Replace: force})
	if errors.Is(err, store.ErrStoreExists) {
		return nil, fmt.Errorf("recover: a store exists at %s; refusing to overwrite it (add -force; the old file is kept beside it)", target)
	}
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	return staged, nil
}

// recoverRollback runs the rollback check on the restored store with this
// TPM's counter: a backup older than a store this TPM has seen is refused
// unless accept (audited).
func recoverRollback(ctx context.Context, tpm transport.TPM, db *store.DB, root *enclave.Root, accept, dev bool, node string) (enclave.RollbackStatus, error) {
	rb, err := enclave.OpenRollback(ctx, tpm, db, root, enclave.RollbackOptions{AcceptRollback: accept, Dev: dev, Node: node, FullCheck: true})
	if errors.Is(err, enclave.ErrRolledBack) {
		return enclave.RollbackStatus{}, fmt.Errorf("recover: %w\n(this TPM's counter has seen a newer store: restore the newest backup, or add -accept-rollback if restoring this one is deliberate)", err)
	}
	if err != nil {
		return enclave.RollbackStatus{}, fmt.Errorf("recover: rollback counter: %w", err)
	}
	st := rb.Status()
	return st, rb.Close()
}

// forgetForeignAuditHead removes the audit head the backup recorded when
// this host's audit log does not hold it (audit.ForgetForeignHead): the
// old host's audit files did not come along, and the head would make this
// host's log fail `audit verify` forever. It returns the forgotten head,
// for the recover line, or nil.
func forgetForeignAuditHead(ctx context.Context, cfg config.Config, db *store.DB, root *enclave.Root) (*audit.Checkpoint, error) {
	key := root.Subkey(enclave.SubkeyAuditAnchor)
	defer key.Wipe()
	cp, err := audit.ForgetForeignHead(ctx, db, cfg.Audit.Dir, key)
	if err != nil {
		return nil, err
	}
	if cp != nil {
		fmt.Fprintf(os.Stderr, "recover: the backup's recorded audit head (seq %d in %s) is not in this host's audit log (%s): it is forgotten and named in the recover line; keep the old host's audit files to verify its history\n", cp.Seq, cp.File, cfg.Audit.Dir)
	}
	return cp, nil
}

// recoverAudit is recover's audit line, with the rollback override's and
// the forgotten audit head (previous_audit_head_seq, _hash, _file).
func recoverAudit(backup, rootID, used, tpmPath string, pcrs []int, rst enclave.RollbackStatus, oldHead *audit.Checkpoint) []audit.Event {
	fields := map[string]string{
		"backup": filepath.Base(backup), "root_id": rootID, "shares": used,
		"tpm": tpmPath, "pcrs": fmt.Sprint(pcrs), "rollback": rst.Event,
	}
	if oldHead != nil {
		maps.Copy(fields, oldHead.Fields("previous_audit_head_"))
	}
	evs := []audit.Event{{Action: actionRecover, Outcome: audit.OutcomeSuccess, Fields: fields}}
	if ev := rollbackAudit(rst); ev != nil {
		evs = append(evs, *ev)
	}
	return evs
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// combineShares rebuilds the root key from the share files (or the shares
// the backup records) and lists the share numbers used, as "1,3".
func combineShares(ctx context.Context, db *store.DB, files []string, ids []age.Identity) (secret.Bytes, string, error) {
	key, used, err := enclave.CombineShareFiles(ctx, db, files, ids...)
	if errors.Is(err, enclave.ErrNoRecoveryRecord) {
		return secret.Bytes{}, "", fmt.Errorf("%w; give the share files with -share", err)
	}
	if err != nil {
		return secret.Bytes{}, "", err
	}
	nums := make([]string, len(used))
	for i, n := range used {
		nums[i] = strconv.Itoa(n)
	}
	return key, strings.Join(nums, ","), nil
}
