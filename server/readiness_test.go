package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
)

// What a failing TPM and an unreachable Vault put in their details: the
// kind of text the public /readyz must not show to anyone who asks.
const (
	tpmDetail   = "the TPM refused to unseal the root key: TPM_RC_POLICY_FAIL (PCR values differ)"
	vaultDetail = `Post "https://vault.internal.example:8200/v1/transit/encrypt/keywarden-custodian": dial tcp 10.20.30.40:8200: connect: connection refused`
)

func vaultDown(_ *config.Config, o *Options) {
	o.Degraded = append(o.Degraded, Check{Name: "vault", Run: func(context.Context) error { return errors.New(vaultDetail) }})
}

// TestPublicReadinessOnlyStatuses: the public /readyz says ready or not and
// the state of each check, no more: error text (TPM errors, Vault's
// address, network layout) is for the operator on the admin API.
func TestPublicReadinessOnlyStatuses(t *testing.T) {
	sealed := func(_ *config.Config, o *Options) { o.Custody, o.SealedReason = nil, tpmDetail }
	for name, opts := range map[string][]harnessOpt{
		"vault down":  {vaultDown},
		"sealed root": {sealed, vaultDown},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, opts...)
			r := h.Do("GET", "/readyz", nil)
			body := string(r.Body)
			for _, leak := range []string{"vault.internal", "10.20.30.40", "8200", "TPM_RC", "PCR", "refused", "detail"} {
				if strings.Contains(body, leak) {
					t.Errorf("public /readyz (%d) shows %q: %s", r.Status, leak, body)
				}
			}
			var rd readiness
			r.DecodeStrict(t, &rd)
			if rd.Checks["vault"].Status != "degraded" {
				t.Errorf("public /readyz lost the vault status: %s", body)
			}
			wantRoot, wantCode := "ok", http.StatusOK
			if name == "sealed root" {
				wantRoot, wantCode = "failing", http.StatusServiceUnavailable
			}
			if r.Status != wantCode || rd.Checks["root_key"].Status != wantRoot {
				t.Errorf("public /readyz = %d %s", r.Status, body)
			}

			// The operator's view has the details, behind the admin key.
			if r := h.Do("GET", "/v1/admin/readyz", nil); r.Status != http.StatusUnauthorized {
				t.Fatalf("admin readiness without the key = %d %s", r.Status, r.Body)
			}
			r = h.Admin("GET", "/v1/admin/readyz", nil)
			if r.Status != wantCode || !strings.Contains(string(r.Body), "vault.internal.example:8200") {
				t.Fatalf("admin readiness = %d %s", r.Status, r.Body)
			}
			if name == "sealed root" && !strings.Contains(string(r.Body), "TPM_RC_POLICY_FAIL") {
				t.Fatalf("admin readiness hides the TPM error: %s", r.Body)
			}
			if !strings.Contains(r.Header.Get("Cache-Control"), "no-store") {
				t.Fatalf("admin readiness Cache-Control %q", r.Header.Get("Cache-Control"))
			}
		})
	}
}
