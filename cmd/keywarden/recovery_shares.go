package main

// The recovery shares of the root key: at `keywarden init` (after the root
// key exists) and at `keywarden recovery reshare`, the root key is split
// T-of-N to the operators' age recipients; each share is written to the
// shares folder and recorded, encrypted, in the store.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
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
// (decisions/16: init requires recovery recipients outside dev mode).
func preflightInit(s recoverySettings) error {
	if err := s.options().Validate(); err != nil {
		return fmt.Errorf("init: recovery shares: %w (set recovery.recipients and recovery.threshold, or -recipient … -threshold T)", err)
	}
	return nil
}

// rollbackInitStep defines the rollback counter and records the store's
// first generation.
func rollbackInitStep(ctx context.Context, c initContext) error {
	rb, err := enclave.InitRollback(ctx, c.tpm, c.db, c.root, enclave.RollbackOptions{Dev: c.cfg.Dev, Node: c.cfg.Rollback.Node})
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
