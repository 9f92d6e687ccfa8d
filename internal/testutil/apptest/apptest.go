// Package apptest is the shared scaffolding of the appliance's in-process
// tests: the core (TPM simulator, bbolt store, root key, audit log), the
// test configuration, and an HTTP client whose replies decode the API's
// error body. It does not import package server, so server's own tests
// can use it; package appserver adds server.New and an httptest server.
//
// The TPM simulator is one per process: tests using a Core must not call
// t.Parallel.
package apptest

import (
	"context"
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/receipt"
	"github.com/keywarden/keywarden/store"
)

// AdminKey is the admin API key of Config.
const AdminKey = "test-admin-key-0123456789abcdef"

// Core is the appliance below the HTTP server, with real components.
type Core struct {
	Dir      string           // the test's temporary directory
	DB       *store.DB        // bbolt at Dir/k.db, or the StoreBackend's
	Sim      *tpmsim.Sim      // the simulator; nil with NoTPM
	TPM      *tpmdev.Counting // counts the commands sent to Sim; nil with NoTPM
	Root     *enclave.Root    // sealed by the simulator (NoTPM: an unsealed key)
	Audit    *audit.Log       // at AuditDir, anchored with Root's "audit-anchor" subkey
	AuditDir string
	// With Receipts: the appliance signing key made in the simulator (its
	// public key) and the batch key it certified, which signs the audit
	// log's anchors and releases' receipts.
	SigningKey *ecdsa.PublicKey
	BatchKey   *receipt.BatchKey
}

type coreSetup struct {
	seed     int64
	noTPM    bool
	rootKey  secret.Bytes
	receipts bool
	auditOpt func(*audit.Options)
	backend  func(testing.TB) store.Backend
}

// CoreOption changes NewCore.
type CoreOption func(*coreSetup)

// Seed sets the simulator's seed (default 7).
func Seed(seed int64) CoreOption { return func(s *coreSetup) { s.seed = seed } }

// NoTPM makes the root key from enclave.NewRootKey, without the simulator
// (for tests that may run in parallel).
func NoTPM() CoreOption { return func(s *coreSetup) { s.noTPM = true } }

// RootKey makes the core's root key key, without the simulator (as
// NoTPM). Two cores given the same key and the same store (StoreBackend
// opening one etcd prefix twice, etcddev.Cluster.SharedBackend) are two
// nodes of one appliance cluster in one process (the simulator is one
// per process, so the nodes cannot each have their own).
func RootKey(key secret.Bytes) CoreOption {
	return func(s *coreSetup) { s.noTPM, s.rootKey = true, key }
}

// StoreBackend puts the store's façade over the backend open returns (a
// fresh, empty one: an embedded etcd member, say) instead of a bbolt file,
// so a test runs the same appliance on another backend. The store owns the
// backend: t.Cleanup closes it with the store.
func StoreBackend(open func(testing.TB) store.Backend) CoreOption {
	return func(s *coreSetup) { s.backend = open }
}

// Receipts makes an appliance signing key in the simulator and opens the
// audit log with a batch key it certified (signed anchors, receipts), as
// serve does. Not with NoTPM.
func Receipts() CoreOption { return func(s *coreSetup) { s.receipts = true } }

// AuditOptions changes the audit log's options before it opens (say, the
// written-only release lines of audit.sync_releases: false).
func AuditOptions(f func(*audit.Options)) CoreOption { return func(s *coreSetup) { s.auditOpt = f } }

// NewCore opens the simulator, a bbolt store in t.TempDir, initializes the
// root key and opens the audit log; t.Cleanup closes them.
func NewCore(t testing.TB, opts ...CoreOption) *Core {
	t.Helper()
	s := coreSetup{seed: 7}
	for _, o := range opts {
		o(&s)
	}
	ctx := context.Background()
	c := &Core{Dir: t.TempDir()}
	if !s.noTPM {
		sim, err := tpmsim.Open(s.seed)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sim.Close() })
		c.Sim, c.TPM = sim, tpmdev.NewCounting(sim)
	}
	var db *store.DB
	var err error
	if s.backend != nil {
		db, err = store.New(s.backend(t), store.Options{})
	} else {
		db, err = store.Open(filepath.Join(c.Dir, "k.db"), store.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c.DB = db
	if s.noTPM {
		key := s.rootKey
		if key.Len() == 0 {
			key = enclave.NewRootKey()
		}
		c.Root, err = enclave.NewRoot(key)
		if err != nil {
			t.Fatal(err)
		}
	} else {
		root, raw, err := enclave.Initialize(ctx, c.TPM, db, enclave.InitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		raw.Wipe()
		c.Root = root
	}
	t.Cleanup(c.Root.Close)
	c.AuditDir = filepath.Join(c.Dir, "audit")
	aopts := audit.Options{Dir: c.AuditDir, AnchorKey: c.Root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1}
	if s.receipts {
		if s.noTPM {
			t.Fatal("apptest: Receipts needs the simulator")
		}
		blob, err := attest.CreateSigningKey(ctx, c.TPM, nil) // not bound: the root key above is sealed without PCRs
		if err != nil {
			t.Fatal(err)
		}
		key, err := attest.LoadSigningKey(ctx, c.TPM, blob)
		if err != nil {
			t.Fatal(err)
		}
		c.BatchKey, err = receipt.NewBatchKey("", time.Now(), key)
		_ = key.Close()
		if err != nil {
			t.Fatal(err)
		}
		c.SigningKey, aopts.Signer = key.PublicKey(), c.BatchKey
	}
	if s.auditOpt != nil {
		s.auditOpt(&aopts)
	}
	c.Audit, err = audit.Open(ctx, aopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Audit.Close(context.Background()) })
	return c
}

// AuditLines anchors the audit log (making every line durable) and returns
// every line written so far.
func (c *Core) AuditLines(t testing.TB) string {
	t.Helper()
	if err := c.Audit.Anchor(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(c.AuditDir, "*.jsonl"))
	var sb strings.Builder
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.IsDir() {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sb.Write(b)
	}
	return sb.String()
}

// Config is config.DevDefaults with AdminKey and rate limits high enough
// that tests never meet them.
func Config() config.Config {
	cfg := config.DevDefaults()
	cfg.Admin.Key = secret.NewString(AdminKey)
	cfg.Limits.RatePerSecond, cfg.Limits.RateBurst = 1e6, 1e6
	return cfg
}
