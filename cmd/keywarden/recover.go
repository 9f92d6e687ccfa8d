package main

// Root key lifecycle commands (DECISIONS 12, 13, 16):
//
//	keywarden recover  -backup FILE -identity KEYFILE… [-share FILE…] [-force] [-pcrs LIST] [-accept-rollback]
//	keywarden reseal   -pcrs LIST                          (before a firmware update: LIST may be "none")
//	keywarden recovery reshare [-recipient age1…]… [-threshold T] [-single-share] [-shares-dir DIR]
//	keywarden recovery status
//	keywarden rollback accept                              (audited: start a deliberately restored store)
//
// Each also takes -config FILE, and -dev to run on dev mode's embedded
// defaults (simulated TPM). They work on the store file directly: stop the
// server first (bbolt's lock refuses a second process anyway).
//
// At `keywarden init` two steps run after the root key exists: the rollback
// counter is defined, and the root key is split T-of-N to the configured
// age recipients (written to the shares folder and recorded, encrypted, in
// the store). During `serve`, a wire step opens the rollback counter before
// any request is served.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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

// recoverySettings are the configuration's recovery section with the
// command line's overrides.
type recoverySettings struct {
	Recipients       []string // operators' age recipients (recovery.recipients)
	Threshold        int      // recovery.threshold; 0: a majority
	AllowSingleShare bool     // recovery.allow_single_share: N = 1 on purpose
	SharesDir        string   // recovery.shares_dir; "": <data.dir>/recovery-shares
}

// initFlagValues are the recovery flags of init and `recovery reshare`:
// -recipient (repeatable), -threshold, -single-share, -shares-dir. They
// override the configuration.
type initFlagValues struct {
	recipients listFlag
	threshold  int
	single     bool
	sharesDir  string
}

// register adds the flags to fs.
func (f *initFlagValues) register(fs *flag.FlagSet) {
	fs.Var(&f.recipients, "recipient", "an operator's age recipient (age1…); repeat for each operator (overrides recovery.recipients)")
	fs.IntVar(&f.threshold, "threshold", 0, "recovery shares needed to rebuild the root key (overrides recovery.threshold; 0: a majority)")
	fs.BoolVar(&f.single, "single-share", false, "allow a single recovery recipient holding the whole root key")
	fs.StringVar(&f.sharesDir, "shares-dir", "", "folder for the encrypted share files (default <data.dir>/recovery-shares)")
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// recoverySettingsFor is the configuration's recovery section with the
// command line's overrides.
func recoverySettingsFor(c config.Config, f initFlagValues) recoverySettings {
	s := recoverySettings{Recipients: c.Recovery.Recipients, Threshold: c.Recovery.Threshold,
		AllowSingleShare: c.Recovery.AllowSingleShare, SharesDir: c.Recovery.SharesDir}
	if len(f.recipients) > 0 {
		s.Recipients = f.recipients
	}
	if f.threshold != 0 {
		s.Threshold = f.threshold
	}
	if f.single {
		s.AllowSingleShare = true
	}
	if f.sharesDir != "" {
		s.SharesDir = f.sharesDir
	}
	if s.SharesDir == "" {
		s.SharesDir = filepath.Join(c.Data.Dir, "recovery-shares")
	}
	return s
}

func (s recoverySettings) options() enclave.RecoveryOptions {
	return enclave.RecoveryOptions{Recipients: s.Recipients, Threshold: s.Threshold, AllowSingleShare: s.AllowSingleShare}
}

// preflightInit checks the recovery settings before init makes a root key
// (DECISIONS 16: init requires recovery recipients outside dev mode).
func preflightInit(s recoverySettings) error {
	if err := s.options().Validate(); err != nil {
		return fmt.Errorf("init: recovery shares: %w (set recovery.recipients and recovery.threshold, or -recipient … -threshold T)", err)
	}
	return nil
}

// rollbackInitStep defines the rollback counter and records the store's
// first generation.
func rollbackInitStep(ctx context.Context, c initContext) error {
	rb, err := enclave.InitRollback(ctx, c.tpm, c.db, c.root, enclave.RollbackOptions{Dev: c.cfg.Dev})
	if err != nil {
		return fmt.Errorf("init: rollback counter: %w", err)
	}
	st := rb.Status()
	if err := rb.Close(); err != nil {
		return err
	}
	if st.Available {
		fmt.Fprintf(os.Stderr, "rollback counter: NV index %#08x, generation %d\n", st.NVIndex, st.Generation)
	} else {
		fmt.Fprintf(os.Stderr, "rollback counter UNAVAILABLE: %s\n", st.Detail)
	}
	return nil
}

// recoveryInitStep splits the new root key to the operators.
func recoveryInitStep(ctx context.Context, c initContext, s recoverySettings) error {
	if err := preflightInit(s); err != nil {
		return fmt.Errorf("%w; the root key exists now but has NO recovery shares: fix the settings and run `keywarden recovery reshare` before storing any key", err)
	}
	shares, err := enclave.SetupRecovery(ctx, c.db, c.raw, s.options())
	if err != nil {
		return fmt.Errorf("init: recovery shares: %w", err)
	}
	paths, err := writeShareFiles(s.SharesDir, shares)
	if err != nil {
		return fmt.Errorf("init: %w; the shares are recorded in the store: run `keywarden recovery reshare` to write them again", err)
	}
	printShares(shares, paths)
	return nil
}

// writeShareFiles writes each share to its own file (0600, never
// overwriting) in dir.
func writeShareFiles(dir string, shares []enclave.RecoveryShare) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recovery shares folder: %w", err)
	}
	var paths []string
	for _, s := range shares {
		p := filepath.Join(dir, s.FileName())
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return paths, fmt.Errorf("write recovery share: %w", err)
		}
		_, err = f.Write(s.File())
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return paths, fmt.Errorf("write recovery share %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func printShares(shares []enclave.RecoveryShare, paths []string) {
	s0 := shares[0]
	fmt.Fprintf(os.Stderr, "recovery: root key %s split %d-of-%d (split %s); any %d operators rebuild it with `keywarden recover`\n",
		s0.RootID, s0.Threshold, s0.Total, s0.SplitID, s0.Threshold)
	for i, s := range shares {
		fmt.Fprintf(os.Stderr, "  share %d for %s: %s\n", s.Index, s.Recipient, paths[i])
	}
	fmt.Fprintln(os.Stderr, "  move each file to its operator and off this host; the store keeps an encrypted copy of each")
}

// lifecycleFlags are the flags every command here takes.
type lifecycleFlags struct {
	config string
	dev    bool
}

func newFlagSet(name string) (*flag.FlagSet, *lifecycleFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	lf := &lifecycleFlags{}
	fs.StringVar(&lf.config, "config", os.Getenv("KEYWARDEN_CONFIG"), "configuration file (YAML)")
	fs.BoolVar(&lf.dev, "dev", false, "use dev mode's embedded defaults (simulated TPM; insecure)")
	return fs, lf
}

func (lf *lifecycleFlags) load() (config.Config, error) {
	var args []string
	if lf.config != "" {
		args = []string{"-config", lf.config}
	}
	c, _, err := loadConfig(args, lf.dev)
	return c, err
}

// parsePCRs reads "7,11", or "none" / "" for no PCRs.
func parsePCRs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 23 {
			return nil, usageError(fmt.Sprintf("-pcrs: %q is not a PCR number 0..23", f))
		}
		out = append(out, n)
	}
	return out, nil
}

// readIdentities reads age identity files (age-keygen's format).
func readIdentities(paths []string) ([]age.Identity, error) {
	var ids []age.Identity
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		got, err := age.ParseIdentities(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("identity file %s: %w", p, err)
		}
		ids = append(ids, got...)
	}
	return ids, nil
}

// operatorAudit records events in the audit log under root (the server
// is stopped: these commands hold the store).
func operatorAudit(ctx context.Context, c config.Config, root *enclave.Root, evs ...audit.Event) error {
	key := root.Subkey("audit-anchor")
	defer key.Wipe()
	return audit.AppendOffline(ctx, audit.Options{Dir: c.Audit.Dir, AnchorKey: key, WriteTimeout: c.Audit.WriteTimeout, MaxFileBytes: c.Audit.MaxFileBytes}, evs...)
}

// rollbackAudit is the audit line for a rollback override, nil otherwise.
func rollbackAudit(st enclave.RollbackStatus) *audit.Event {
	if st.Event != enclave.RollbackOverride {
		return nil
	}
	return &audit.Event{Action: actionRollbackAccepted, Outcome: audit.OutcomeSuccess, Reason: "operator_override",
		Fields: map[string]string{"detail": st.Detail, "generation": strconv.FormatUint(st.Generation, 10), "counter": strconv.FormatUint(st.Counter, 10)}}
}

// cmdRecover rebuilds the root key from T shares and a backup on a new
// host: the backup becomes the store and the root key is sealed to this
// host's TPM. In this order: stage a copy of the backup next to the store
// → open the copy → combine the shares → check the key against the
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
	pcrs, err := f.sealPCRs(cfg)
	if err != nil {
		return err
	}
	staged, err := stageBackup(f.backup, cfg.Data.DB, f.force)
	if err != nil {
		return err
	}
	defer staged.Abort()
	ids, err := readIdentities(f.identities)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	db, err := store.Open(staged.Path, store.Options{})
	if err != nil {
		return fmt.Errorf("recover: the backup does not open: %w", err)
	}
	defer db.Close()
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
	rst, err := recoverRollback(ctx, tpm, db, root, f.acceptRollback, cfg.Dev)
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
	if err := db.Close(); err != nil {
		return err
	}
	kept, err := staged.Commit()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if kept != "" {
		fmt.Fprintf(os.Stderr, "recover: the previous store is kept as %s\n", kept)
	}
	fmt.Fprintf(os.Stderr, "recovered: root key %s rebuilt from shares %s, sealed to %s (PCRs %v); store at %s; rollback counter: %s\n",
		root.RootID(), used, cfg.TPM.Path, pcrs, cfg.Data.DB, rst.Detail)
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
func recoverRollback(ctx context.Context, tpm transport.TPM, db *store.DB, root *enclave.Root, accept, dev bool) (enclave.RollbackStatus, error) {
	rb, err := enclave.OpenRollback(ctx, tpm, db, root, enclave.RollbackOptions{AcceptRollback: accept, Dev: dev})
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
	key := root.Subkey("audit-anchor")
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

// openOffline opens the TPM and the store (the server must be stopped) and
// unseals the root key.
func openOffline(ctx context.Context, cfg config.Config) (transport.TPMCloser, *store.DB, *enclave.Root, func(), error) {
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("open TPM %s: %w", cfg.TPM.Path, err)
	}
	db, err := store.Open(cfg.Data.DB, store.Options{Timeout: 2 * time.Second})
	if err != nil {
		tpm.Close()
		return nil, nil, nil, nil, fmt.Errorf("%w (stop the server first)", err)
	}
	root, err := enclave.Unseal(ctx, tpm, db)
	if err != nil {
		db.Close()
		tpm.Close()
		return nil, nil, nil, nil, err
	}
	return tpm, db, root, func() { root.Close(); db.Close(); tpm.Close() }, nil
}

// cmdReseal seals the root key again to another PCR list.
func cmdReseal(ctx context.Context, args []string) error {
	fs, lf := newFlagSet("reseal")
	pcrsFlag := fs.String("pcrs", "", "PCRs to seal to, e.g. 7,11; \"none\" to bind to this TPM only (required)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if !flagSet(fs, "pcrs") {
		return usageError("reseal: -pcrs LIST is required (\"none\" for no PCRs)")
	}
	pcrs, err := parsePCRs(*pcrsFlag)
	if err != nil {
		return err
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	tpm, db, root, closeAll, err := openOffline(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	defer closeAll()
	old, err := enclave.LoadSealedRoot(ctx, db)
	if err != nil {
		return err
	}
	if err := enclave.Reseal(ctx, tpm, db, pcrs); err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	if err := operatorAudit(ctx, cfg, root, audit.Event{Action: actionReseal, Outcome: audit.OutcomeSuccess,
		Fields: map[string]string{"from_pcrs": fmt.Sprint(old.PCRs), "to_pcrs": fmt.Sprint(pcrs)}}); err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	fmt.Fprintf(os.Stderr, "reseal: root key sealed to PCRs %v (was %v) and checked\n", pcrs, old.PCRs)
	warnNoPCRPolicy(cfg, pcrs)
	return nil
}

// warnNoPCRPolicy tells the operator that serve will refuse a root key
// just sealed without PCRs (a step of a firmware update, say) until it is
// sealed to PCRs again or tpm.allow_no_pcr_policy is set.
func warnNoPCRPolicy(cfg config.Config, pcrs []int) {
	if len(pcrs) == 0 && !cfg.Dev && !cfg.TPM.AllowNoPCRPolicy {
		fmt.Fprintln(os.Stderr, "NOTE: the root key has no PCR policy now; `keywarden serve` refuses it until `keywarden reseal -pcrs LIST` seals it to PCRs again (or tpm.allow_no_pcr_policy: true is set)")
	}
}

// cmdRecovery: `recovery reshare` and `recovery status`.
func cmdRecovery(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("recovery: want `recovery reshare` or `recovery status`")
	}
	switch args[0] {
	case "reshare":
		return cmdReshare(ctx, args[1:])
	case "status":
		return cmdRecoveryStatus(ctx, args[1:])
	}
	return usageError("recovery: want `recovery reshare` or `recovery status`")
}

func cmdReshare(ctx context.Context, args []string) error {
	fs, lf := newFlagSet("recovery reshare")
	var flags initFlagValues
	flags.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	s := recoverySettingsFor(cfg, flags)
	if err := s.options().Validate(); err != nil {
		return fmt.Errorf("recovery reshare: %w", err)
	}
	_, db, root, closeAll, err := openOffline(ctx, cfg)
	if err != nil {
		return fmt.Errorf("recovery reshare: %w", err)
	}
	defer closeAll()
	shares, err := enclave.Reshare(ctx, db, root, s.options())
	if err != nil {
		return fmt.Errorf("recovery reshare: %w", err)
	}
	paths, err := writeShareFiles(s.SharesDir, shares)
	if err != nil {
		return fmt.Errorf("recovery reshare: %w", err)
	}
	if err := operatorAudit(ctx, cfg, root, audit.Event{Action: actionReshare, Outcome: audit.OutcomeSuccess, Fields: map[string]string{
		"split_id": shares[0].SplitID, "threshold": strconv.Itoa(shares[0].Threshold), "total": strconv.Itoa(shares[0].Total),
		"recipients": strings.Join(s.Recipients, ","),
	}}); err != nil {
		return fmt.Errorf("recovery reshare: %w", err)
	}
	printShares(shares, paths)
	fmt.Fprintln(os.Stderr, "  earlier shares still rebuild the same root key: destroy them")
	return nil
}

func cmdRecoveryStatus(ctx context.Context, args []string) error {
	fs, lf := newFlagSet("recovery status")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	db, err := store.Open(cfg.Data.DB, store.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	info, err := enclave.LoadRecovery(ctx, db)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "root key id: %s\nsplit id:    %s\nthreshold:   %d of %d\nmade:        %s\n", info.RootID, info.SplitID, info.Threshold, info.Total, info.Created.Format(time.RFC3339))
	for _, s := range info.Shares {
		fmt.Fprintf(&b, "share %d: %s\n", s.Index, s.Recipient)
	}
	_, err = os.Stdout.Write(b.Bytes())
	return err
}

// cmdRollback: `rollback accept` records the TPM counter as the store's
// new baseline after a deliberate restore (audited).
func cmdRollback(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "accept" {
		return usageError("rollback: want `rollback accept`")
	}
	fs, lf := newFlagSet("rollback accept")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err.Error())
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	tpm, db, root, closeAll, err := openOffline(ctx, cfg)
	if err != nil {
		return fmt.Errorf("rollback accept: %w", err)
	}
	defer closeAll()
	rb, err := enclave.OpenRollback(ctx, tpm, db, root, enclave.RollbackOptions{AcceptRollback: true, Dev: cfg.Dev})
	if err != nil {
		return fmt.Errorf("rollback accept: %w", err)
	}
	st := rb.Status()
	if err := rb.Close(); err != nil {
		return err
	}
	if ev := rollbackAudit(st); ev != nil {
		if err := operatorAudit(ctx, cfg, root, *ev); err != nil {
			return fmt.Errorf("rollback accept: %w", err)
		}
		fmt.Fprintf(os.Stderr, "rollback accepted: %s\n", st.Detail)
		return nil
	}
	fmt.Fprintf(os.Stderr, "nothing to accept: the store is current (%s, generation %d, counter %d)\n", st.Event, st.Generation, st.Counter)
	return nil
}
