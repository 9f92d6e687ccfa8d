package main

// Offline commands: they work on the store file directly, with the server
// stopped (bbolt's lock refuses a second process anyway), and record what
// they did in the audit log themselves (audit.AppendOffline).
//
//	keywarden reseal   -pcrs LIST                          (before a firmware update: LIST may be "none";
//	                                                        on store.backend embedded: this node's state.json)
//	keywarden recovery reshare [-recipient age1…]… [-threshold T] [-single-share] [-shares-dir DIR]
//	keywarden recovery status
//	keywarden rollback accept                              (audited: start a deliberately restored store)
//
// Each also takes -config FILE, and -dev to run on dev mode's embedded
// defaults (simulated TPM).

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
)

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
	key := root.Subkey(enclave.SubkeyAuditAnchor)
	defer key.Wipe()
	return audit.AppendOffline(ctx, audit.Options{Dir: c.Audit.Dir, AnchorKey: key, WriteTimeout: c.Audit.WriteTimeout, MaxFileBytes: c.Audit.MaxFileBytes}, evs...)
}

// rollbackAudit is the audit line for a rollback override, nil otherwise.
func rollbackAudit(st enclave.RollbackStatus) *audit.Event {
	if st.Event != enclave.RollbackOverride {
		return nil
	}
	ev := &audit.Event{Action: actionRollbackAccepted, Outcome: audit.OutcomeSuccess, Reason: "operator_override",
		Fields: map[string]string{"detail": st.Detail, "generation": strconv.FormatUint(st.Generation, 10), "counter": strconv.FormatUint(st.Counter, 10)}}
	if st.Node != "" {
		ev.Fields["node"] = st.Node
		ev.Fields["cluster_generation"] = strconv.FormatUint(st.ClusterGeneration, 10)
	}
	return ev
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// openOffline opens the TPM and the store (the server must be stopped) and
// unseals the root key.
func openOffline(ctx context.Context, cfg config.Config) (transport.TPMCloser, *store.DB, *enclave.Root, func(), error) {
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("open TPM %s: %w", cfg.TPM.Path, err)
	}
	db, err := openStoreDB(ctx, cfg, store.Options{Timeout: 2 * time.Second})
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
	if cfg.Store.Backend == "embedded" {
		return resealNode(ctx, cfg, pcrs)
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
	db, err := openStoreDB(ctx, cfg, store.Options{ReadOnly: true, Timeout: 2 * time.Second})
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
	if cfg.Store.Backend == "embedded" {
		return errRollbackAcceptEmbedded
	}
	tpm, db, root, closeAll, err := openOffline(ctx, cfg)
	if err != nil {
		return fmt.Errorf("rollback accept: %w", err)
	}
	defer closeAll()
	rb, err := enclave.OpenRollback(ctx, tpm, db, root, enclave.RollbackOptions{AcceptRollback: true, Dev: cfg.Dev, Node: cfg.Rollback.Node})
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
