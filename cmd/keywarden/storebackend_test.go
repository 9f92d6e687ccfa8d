package main

import (
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
)

// TestStoreBackendEtcdRefusedUntilServed: a valid etcd configuration is
// refused by every command (config check and serve alike) while serve
// cannot open it, rather than silently served from bbolt.
func TestStoreBackendEtcdRefusedUntilServed(t *testing.T) {
	c, err := config.Load(config.DevDefaults(), "", []string{"KEYWARDEN_ADMIN_KEY=dev-admin-key-0123456789", "KEYWARDEN_STORE_BACKEND=etcd", "KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379"})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkServices(c); err == nil || !strings.Contains(err.Error(), "store.backend") {
		t.Fatalf("checkServices with store.backend etcd: %v", err)
	}
	c.Store.Backend = "bbolt"
	if err := checkServices(c); err != nil {
		t.Fatalf("bbolt: %v", err)
	}
}
