package vaultdev

import (
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/vault/api"
)

func TestCachedBinaryMatchesScriptLayout(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KEYWARDEN_CACHE", "/nonexistent-cache")
	p, err := cachedBinary(root)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(p)) != "/nonexistent-cache" || filepath.Base(p) != "vault" {
		t.Fatalf("path %q is not <cache>/vault-<sum>/vault", p)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "vault.sh")); err != nil {
		t.Fatal(err)
	}
}

func TestStartTransitSealUnseal(t *testing.T) {
	s := Start(t)
	c := s.Client()

	ctxB64 := base64.StdEncoding.EncodeToString([]byte("user-1"))
	sec, err := c.Logical().Write(TransitMount+"/encrypt/"+KeyName, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString([]byte("hello")),
		"context":   ctxB64,
	})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	if ct, _ := sec.Data["ciphertext"].(string); ct == "" {
		t.Fatal("no ciphertext")
	}
	// The key is derived: no context, no encryption.
	if _, err := c.Logical().Write(TransitMount+"/encrypt/"+KeyName, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString([]byte("hello")),
	}); err == nil {
		t.Fatal("encrypt without context succeeded on a derived key")
	}

	s.Seal()
	_, err = c.Logical().Read(TransitMount + "/keys/" + KeyName)
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("sealed read: got %v, want 503", err)
	}
	s.Unseal()
	if _, err := c.Logical().Read(TransitMount + "/keys/" + KeyName); err != nil {
		t.Fatalf("after unseal: %v", err)
	}

	tok := s.NewToken(0, "default")
	c2 := s.Client()
	c2.SetToken(tok)
	if _, err := c2.Logical().Read(TransitMount + "/keys/" + KeyName); err == nil {
		t.Fatal("default policy read a transit key")
	}

	s.Stop()
	if _, err := c.Sys().Health(); err == nil {
		t.Fatal("health answered after Stop")
	}
}
