package apptest

import (
	"context"
	"testing"

	"github.com/keywarden/keywarden/store"
)

// No t.Parallel: the simulator is one per process.
func TestNewCore(t *testing.T) {
	for name, opts := range map[string][]CoreOption{"simulator": nil, "no TPM": {NoTPM()}} {
		t.Run(name, func(t *testing.T) {
			c := NewCore(t, opts...)
			if (c.Sim == nil) != (len(opts) == 1) || (c.TPM == nil) != (c.Sim == nil) {
				t.Fatalf("Sim %v TPM %v", c.Sim, c.TPM)
			}
			if c.TPM != nil && c.TPM.Count() == 0 {
				t.Fatal("the root key was not sealed with the simulator")
			}
			ctx := context.Background()
			if err := c.DB.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketMeta, []byte("apptest"), []byte("1")) }); err != nil {
				t.Fatal(err)
			}
			if c.Root.Subkey("a").Len() == 0 {
				t.Fatal("no root key")
			}
			_ = c.AuditLines(t)
		})
	}
	if cfg := Config(); cfg.Admin.Key.Reveal() != AdminKey {
		t.Fatal("Config does not carry AdminKey")
	}
}
