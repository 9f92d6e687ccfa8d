package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
)

// TestStoreBackendEtcdChecked: a valid etcd configuration passes the
// checks every command runs (serve opens it); an https one whose CA file
// does not load is refused naming the etcd section, before anything opens.
func TestStoreBackendEtcdChecked(t *testing.T) {
	c, err := config.Load(config.DevDefaults(), "", []string{"KEYWARDEN_ADMIN_KEY=dev-admin-key-0123456789", "KEYWARDEN_STORE_BACKEND=etcd", "KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379"})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkServices(c); err != nil {
		t.Fatalf("checkServices with store.backend etcd: %v", err)
	}
	c.Etcd.Endpoints = []string{"https://etcd.example:2379"}
	c.Etcd.CAFile = t.TempDir() + "/missing-ca.pem"
	if err := checkServices(c); err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("https etcd with a missing CA file: %v", err)
	}
	c.Store.Backend = "bbolt"
	if err := checkServices(c); err != nil {
		t.Fatalf("bbolt: %v", err)
	}
}

// TestStoreBackendSharesEphemeralState: the store opened for store.backend
// etcd shares its ephemeral state (ceremonies, proofs, budgets) and reads
// the block list from etcd; bbolt keeps them in the process.
func TestStoreBackendSharesEphemeralState(t *testing.T) {
	c := etcddev.Embedded(t)
	cfg, err := config.Load(config.DevDefaults(), "", []string{"KEYWARDEN_ADMIN_KEY=dev-admin-key-0123456789", "KEYWARDEN_STORE_BACKEND=etcd",
		"KEYWARDEN_ETCD_ENDPOINTS=" + c.Endpoint(0), "KEYWARDEN_DATA_DIR=" + t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	db, err := openStoreDB(context.Background(), cfg, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, ok := db.SharedEphemeral(); !ok || !db.Shared() {
		t.Fatal("store.backend etcd: the ephemeral state is not shared")
	}
	cfg.Store.Backend = "bbolt"
	cfg.Data.DB = filepath.Join(t.TempDir(), "k.db")
	bolt, err := openStoreDB(context.Background(), cfg, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	if bolt.Shared() {
		t.Fatal("store.backend bbolt reports shared state")
	}
}

// TestSharedStateRequiredOffBbolt: a store behind any backend but bbolt
// must share the refusal state; one that does not (a wrapper that hides
// etcdstore's Ephemeral, say) is refused.
func TestSharedStateRequiredOffBbolt(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := checkSharedState("bbolt", db); err != nil {
		t.Fatalf("bbolt: %v", err)
	}
	if err := checkSharedState("embedded", db); err == nil || !strings.Contains(err.Error(), "store.backend embedded") {
		t.Fatalf("a backend other than bbolt without shared state: %v", err)
	}
}
