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
	"io"
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
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

func init() {
	initSteps = append(initSteps, rollbackInitStep, recoveryInitStep)
	wireSteps = append(wireSteps, rollbackWireStep)
	extraCommands["recover"] = cmdRecover
	extraCommands["reseal"] = cmdReseal
	extraCommands["recovery"] = cmdRecovery
	extraCommands["rollback"] = cmdRollback
}

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

// configRecovery reads the configuration's recovery section. It is empty
// until internal/config has recovery.recipients, recovery.threshold,
// recovery.allow_single_share and recovery.shares_dir; then it becomes
//
//	return recoverySettings{Recipients: c.Recovery.Recipients, Threshold: c.Recovery.Threshold,
//		AllowSingleShare: c.Recovery.AllowSingleShare, SharesDir: c.Recovery.SharesDir}
var configRecovery = func(c config.Config) recoverySettings {
	return recoverySettings{Recipients: c.Recovery.Recipients, Threshold: c.Recovery.Threshold,
		AllowSingleShare: c.Recovery.AllowSingleShare, SharesDir: c.Recovery.SharesDir}
}

// initFlags are init's recovery flags (see registerInitFlags).
var initFlags struct {
	recipients listFlag
	threshold  int
	single     bool
	sharesDir  string
}

// registerInitFlags adds init's recovery flags to its flag set:
// -recipient (repeatable), -threshold, -single-share, -shares-dir. They
// override the configuration.
func registerInitFlags(fs *flag.FlagSet) {
	initFlags.recipients = nil
	fs.Var(&initFlags.recipients, "recipient", "an operator's age recipient (age1…); repeat for each operator (overrides recovery.recipients)")
	fs.IntVar(&initFlags.threshold, "threshold", 0, "recovery shares needed to rebuild the root key (overrides recovery.threshold; 0: a majority)")
	fs.BoolVar(&initFlags.single, "single-share", false, "allow a single recovery recipient holding the whole root key")
	fs.StringVar(&initFlags.sharesDir, "shares-dir", "", "folder for the encrypted share files (default <data.dir>/recovery-shares)")
}

// acceptRollback is serve's -accept-rollback flag: start a store older than
// the TPM's rollback counter, recording a new baseline (audited). Prefer
// `keywarden rollback accept`, which does it once; a flag left in a unit
// file would accept every later rollback too.
var acceptRollback bool

// recoverSteps run after `keywarden recover` has resealed the root key to
// the new TPM (the attestation key must be made anew there: a blob of the
// old TPM does not load).
var recoverSteps []func(ctx context.Context, c initContext) error

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func recoverySettingsFor(c config.Config) recoverySettings {
	s := configRecovery(c)
	if len(initFlags.recipients) > 0 {
		s.Recipients = initFlags.recipients
	}
	if initFlags.threshold != 0 {
		s.Threshold = initFlags.threshold
	}
	if initFlags.single {
		s.AllowSingleShare = true
	}
	if initFlags.sharesDir != "" {
		s.SharesDir = initFlags.sharesDir
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
func preflightInit(c config.Config) error {
	if err := recoverySettingsFor(c).options().Validate(); err != nil {
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
func recoveryInitStep(ctx context.Context, c initContext) error {
	s := recoverySettingsFor(c.cfg)
	if err := preflightInit(c.cfg); err != nil {
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

// operatorAudit records one event in the audit log under root (the server
// is stopped: these commands hold the store).
func operatorAudit(ctx context.Context, c config.Config, root *enclave.Root, evs ...audit.Event) error {
	key := root.Subkey(enclave.SubkeyAuditAnchor)
	defer key.Wipe()
	l, err := audit.Open(ctx, audit.Options{Dir: c.Audit.Dir, AnchorKey: key, WriteTimeout: c.Audit.WriteTimeout, MaxFileBytes: c.Audit.MaxFileBytes})
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	for _, ev := range evs {
		if ev.Actor == "" {
			ev.Actor = "operator:cli"
		}
		if err := l.Record(ctx, ev); err != nil {
			_ = l.Close(ctx)
			return fmt.Errorf("audit log: %w", err)
		}
	}
	return l.Close(ctx)
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
// host's TPM.
func cmdRecover(ctx context.Context, args []string) error {
	fs, lf := newFlagSet("recover")
	backup := fs.String("backup", "", "backup file (from `keywarden backup`)")
	var shareFiles, identityFiles listFlag
	fs.Var(&shareFiles, "share", "a recovery share file; repeat (default: the shares recorded in the backup)")
	fs.Var(&identityFiles, "identity", "an operator's age identity file (age-keygen); repeat")
	force := fs.Bool("force", false, "replace an existing store (it is kept as <db>.replaced-<time>)")
	pcrsFlag := fs.String("pcrs", "", "PCRs to seal the root key to (default tpm.pcrs; \"none\" for none)")
	accept := fs.Bool("accept-rollback", false, "accept a backup older than this TPM's rollback counter (same host; audited)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if *backup == "" || len(identityFiles) == 0 {
		return usageError("recover: -backup FILE and at least one -identity FILE are required")
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	pcrs := cfg.TPM.PCRs
	if flagSet(fs, "pcrs") {
		if pcrs, err = parsePCRs(*pcrsFlag); err != nil {
			return err
		}
	}
	target := cfg.Data.DB
	if _, err := os.Stat(target); err == nil && !*force {
		return fmt.Errorf("recover: a store exists at %s; refusing to overwrite it (add -force; the old file is kept beside it)", target)
	}
	ids, err := readIdentities(identityFiles)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}

	// Work on a copy next to the target; it takes the target's place only
	// when everything succeeded.
	tmp := target + ".recover-tmp"
	_ = os.Remove(tmp)
	if err := copyFileSync(*backup, tmp); err != nil {
		return fmt.Errorf("recover: copy the backup: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmp)
		}
	}()
	db, err := store.Open(tmp, store.Options{})
	if err != nil {
		return fmt.Errorf("recover: the backup does not open: %w", err)
	}
	defer db.Close()

	key, used, err := combineFromShares(ctx, db, shareFiles, ids)
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
	rb, err := enclave.OpenRollback(ctx, tpm, db, root, enclave.RollbackOptions{AcceptRollback: *accept, Dev: cfg.Dev})
	if errors.Is(err, enclave.ErrRolledBack) {
		return fmt.Errorf("recover: %w\n(this TPM's counter has seen a newer store: restore the newest backup, or add -accept-rollback if restoring this one is deliberate)", err)
	}
	if err != nil {
		return fmt.Errorf("recover: rollback counter: %w", err)
	}
	rst := rb.Status()
	if err := rb.Close(); err != nil {
		return err
	}
	for _, step := range recoverSteps {
		if err := step(ctx, initContext{cfg: cfg, tpm: tpm, db: db, root: root, raw: key}); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	evs := []audit.Event{{Action: actionRecover, Outcome: audit.OutcomeSuccess, Fields: map[string]string{
		"backup": filepath.Base(*backup), "root_id": root.RootID(), "shares": used,
		"tpm": cfg.TPM.Path, "pcrs": fmt.Sprint(pcrs), "rollback": rst.Event,
	}}}
	if ev := rollbackAudit(rst); ev != nil {
		evs = append(evs, *ev)
	}
	if err := operatorAudit(ctx, cfg, root, evs...); err != nil {
		return fmt.Errorf("recover: %w (nothing was replaced)", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	if _, err := os.Stat(target); err == nil {
		old := fmt.Sprintf("%s.replaced-%s", target, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(target, old); err != nil {
			return fmt.Errorf("recover: keep the old store: %w", err)
		}
		fmt.Fprintf(os.Stderr, "recover: the previous store is kept as %s\n", old)
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	done = true
	syncDir(filepath.Dir(target))
	fmt.Fprintf(os.Stderr, "recovered: root key %s rebuilt from shares %s, sealed to %s (PCRs %v); store at %s; rollback counter: %s\n",
		root.RootID(), used, cfg.TPM.Path, pcrs, target, rst.Detail)
	fmt.Fprintln(os.Stderr, "next: make a new attestation key on this TPM, and check `keywarden recovery status`")
	warnNoPCRPolicy(cfg, pcrs)
	return nil
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

// combineFromShares decrypts the share files (or, with none, the shares
// recorded in the backup) with ids and combines them. used lists the share
// numbers that went in.
func combineFromShares(ctx context.Context, db *store.DB, files []string, ids []age.Identity) (secret.Bytes, string, error) {
	var plains []secret.Bytes
	defer func() {
		for _, p := range plains {
			p.Wipe()
		}
	}()
	var used []string
	add := func(p secret.Bytes) error {
		info, err := enclave.InspectShare(p)
		if err != nil {
			return err
		}
		plains = append(plains, p)
		used = append(used, strconv.Itoa(info.Index))
		return nil
	}
	if len(files) > 0 {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return secret.Bytes{}, "", err
			}
			p, err := enclave.DecryptShare(b, ids...)
			if err != nil {
				return secret.Bytes{}, "", fmt.Errorf("share %s: %w", f, err)
			}
			if err := add(p); err != nil {
				return secret.Bytes{}, "", fmt.Errorf("share %s: %w", f, err)
			}
		}
	} else {
		info, err := enclave.LoadRecovery(ctx, db)
		if err != nil {
			return secret.Bytes{}, "", fmt.Errorf("%w; give the share files with -share", err)
		}
		for _, s := range info.Shares {
			p, err := enclave.DecryptShare(s.File(), ids...)
			if errors.Is(err, enclave.ErrShareIdentity) {
				continue // another operator's share
			}
			if err != nil {
				return secret.Bytes{}, "", fmt.Errorf("recorded share %d: %w", s.Index, err)
			}
			if err := add(p); err != nil {
				return secret.Bytes{}, "", err
			}
		}
	}
	raw := make([][]byte, len(plains))
	for i, p := range plains {
		raw[i] = p.Reveal()
	}
	key, err := enclave.CombineShares(raw)
	if err != nil {
		return secret.Bytes{}, "", err
	}
	return key, strings.Join(used, ","), nil
}

func copyFileSync(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
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
	registerInitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	cfg, err := lf.load()
	if err != nil {
		return err
	}
	s := recoverySettingsFor(cfg)
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

// rollbackWireStep opens the rollback counter before the server serves
// (and before anything else writes the store): a store older than the
// counter (ErrRolledBack) or whose records are not the ones its rollback
// record vouches for (ErrRecordsAltered) does not start unless
// acceptRollback, which is audited. From then on every store write
// advances the generation in its own transaction. The Rollback is closed (pending
// increment flushed) at shutdown.
func rollbackWireStep(ctx context.Context, a *appliance, opts *server.Options) error {
	rb, err := openApplianceRollback(ctx, a, acceptRollback)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, func() {
		if err := rb.Close(); err != nil {
			a.log.Error("rollback counter: final increment failed (the next start catches it up)", "err", err)
		}
	})
	opts.Degraded = append(opts.Degraded, server.Check{Name: "rollback_counter", Run: func(context.Context) error {
		if st := rb.Status(); !st.Available {
			return errors.New("the TPM rollback counter is unavailable: a restored old store would not be detected")
		}
		return nil
	}})
	if !a.cfg.Dev {
		if _, err := enclave.LoadRecovery(ctx, a.db); errors.Is(err, enclave.ErrNoRecoveryRecord) {
			a.log.Error("this store has NO recovery shares: a dead TPM would lose every key; run `keywarden recovery reshare`")
			opts.Degraded = append(opts.Degraded, server.Check{Name: "recovery_shares", Run: func(context.Context) error {
				return errors.New("no recovery shares recorded: run `keywarden recovery reshare`")
			}})
		}
	}
	if a.metrics != nil {
		a.metrics.CounterFunc("keywarden_rollback_nv_increments_total", "Increments of the TPM's rollback NV counter (at most one per rollback.min_interval; NV writes wear the TPM).", func() float64 { return float64(rb.Increments()) })
	}
	opts.Rollback = rb
	return nil
}

// openApplianceRollback runs OpenRollback for serve and audits an override.
func openApplianceRollback(ctx context.Context, a *appliance, accept bool) (*enclave.Rollback, error) {
	rb, err := enclave.OpenRollback(ctx, a.tpm, a.db, a.root, enclave.RollbackOptions{AcceptRollback: accept, Dev: a.cfg.Dev, Logger: a.log, Interval: a.cfg.Rollback.MinInterval})
	if err != nil {
		return nil, fmt.Errorf("rollback check: %w", err)
	}
	st := rb.Status()
	a.log.Info("rollback counter", "event", st.Event, "generation", st.Generation, "counter", st.Counter, "available", st.Available, "records", st.Records, "detail", st.Detail)
	if ev := rollbackAudit(st); ev != nil {
		if a.audit == nil {
			_ = rb.Close()
			return nil, errors.New("rollback check: cannot audit the rollback override")
		}
		if err := a.audit.Record(ctx, *ev); err != nil {
			_ = rb.Close()
			return nil, fmt.Errorf("rollback check: audit the override: %w", err)
		}
	}
	return rb, nil
}
