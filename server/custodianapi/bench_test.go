package custodianapi

import (
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
)

// benchShare is the size of a Portal custodian backup share (a JSON string
// of a few hundred bytes).
var benchShare = make([]byte, 512)

// BenchmarkHTTPUnwrap is the admin GET of a custodian share through
// Keywarden: HTTP on loopback, admin-key check, store read, one Transit
// decrypt, an audit line, JSON. Compare with BenchmarkTransitDirect.
func BenchmarkHTTPUnwrap(b *testing.B) {
	v := newEnv(b, envOpts{})
	want(b, v.Admin("PUT", sharePath("bench", ""), map[string]string{"share": b64(benchShare)}), 201, "")
	b.ReportAllocs()
	for b.Loop() {
		if r := v.Admin("GET", sharePath("bench", ""), nil); r.Status != http.StatusOK {
			b.Fatalf("GET: %d %s", r.Status, r.Body)
		}
	}
}

// BenchmarkHTTPWrap is the admin PUT (a replace, so a prior version is
// kept): Transit encrypt, an audit line, one store commit.
func BenchmarkHTTPWrap(b *testing.B) {
	v := newEnv(b, envOpts{})
	body := map[string]string{"share": b64(benchShare)}
	b.ReportAllocs()
	for b.Loop() {
		if r := v.Admin("PUT", sharePath("bench", ""), body); r.Status/100 != 2 {
			b.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
	}
}

// BenchmarkTransitDirect is one Transit decrypt of the same share called
// directly with Vault's API client (the floor under BenchmarkHTTPUnwrap).
func BenchmarkTransitDirect(b *testing.B) {
	v := vaultdev.Start(b)
	c := v.Client()
	ctx := base64.StdEncoding.EncodeToString([]byte("user:bench"))
	sec, err := c.Logical().Write("transit/encrypt/"+vaultdev.KeyName, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(benchShare), "context": ctx,
	})
	if err != nil {
		b.Fatal(err)
	}
	ct := sec.Data["ciphertext"].(string)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Logical().Write("transit/decrypt/"+vaultdev.KeyName, map[string]any{"ciphertext": ct, "context": ctx}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransitDirectWrap is one Transit encrypt called directly (the
// floor under BenchmarkHTTPWrap).
func BenchmarkTransitDirectWrap(b *testing.B) {
	v := vaultdev.Start(b)
	c := v.Client()
	in := map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(benchShare),
		"context":   base64.StdEncoding.EncodeToString([]byte("user:bench")),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Logical().Write("transit/encrypt/"+vaultdev.KeyName, in); err != nil {
			b.Fatal(err)
		}
	}
}
