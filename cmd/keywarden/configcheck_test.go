package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckRefusesWhatServeRefuses: every setting that `serve`
// refuses (in config validation, in its wiring, or in a service's own
// Options.Validate) is refused by `config check` too, naming the setting;
// and `serve` refuses it before it touches the TPM.
func TestConfigCheckRefusesWhatServeRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := fmt.Sprintf("listen:\n  plain_http: true\ndata:\n  dir: %s\ntpm:\n  path: tcp://127.0.0.1:1\n  pcrs: [7]\n", filepath.Join(dir, "data"))
	cases := []struct {
		name, yaml string
		field      string // named in the error
		also       string // and this text
	}{
		{"plain http Portal API URL", "portal:\n  custodian_id: cust-1\n  api_url: http://api.portal.example\n", "portal.api_url", "loopback"},
		{"webhook secrets without a custodian", "portal:\n  webhook_secrets: [\"0123456789abcdef0123\"]\n", "portal.custodian_id", "webhook_secrets"},
		{"Portal identity TTL over a day", "portal:\n  custodian_id: cust-1\n  identity_ttl: 48h\n", "portal.identity_ttl", "24h"},
		{"Portal custodian id too long", "portal:\n  custodian_id: " + strings.Repeat("c", 300) + "\n", "portal.custodian_id", "256"},
		{"plain http certificate URL", "firebase:\n  project_ids: [proj-a]\n  certs_url: http://certs.example/x509\n", "firebase.certs_url", "loopback"},
		{"Firebase tenant with a slash", "firebase:\n  project_ids: [proj-a]\n  tenants: [\"a/b\"]\n", "firebase.tenants", "a/b"},
		{"passkey ceremony TTL too short", "passkey:\n  rp_id: example.com\n  origins: [\"https://example.com\"]\n  ceremony_ttl: 5s\n", "passkey.ceremony_ttl", "10s"},
		{"passkey origin of another site", "passkey:\n  rp_id: example.com\n  origins: [\"https://evil.example\"]\n", "passkey.origins", "evil.example"},
		{"Apple app id without a team", "passkey:\n  rp_id: example.com\n  origins: [\"https://example.com\"]\n  apple_app_ids: [\"com.example.app\"]\n", "passkey.apple_app_ids", "team"},
		{"plain http Vault", "vault:\n  addr: http://vault.example:8200\n  token: t\n", "vault.addr", "loopback"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfigFile(t, filepath.Join(dir, fmt.Sprint(i)), base+tc.yaml)
			for _, cmd := range [][]string{{"config", "check"}, {"serve"}} {
				err := run(ctx, append(cmd, "-config", file))
				if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.also) {
					t.Errorf("%s: %v, want an error naming %s (%q)", strings.Join(cmd, " "), err, tc.field, tc.also)
				}
			}
		})
	}
	// The same settings, fixed, pass.
	ok := base + "portal:\n  custodian_id: cust-1\n  api_url: https://api.portal.example\n  webhook_secrets: [\"0123456789abcdef0123\"]\n" +
		"firebase:\n  project_ids: [proj-a]\n  tenants: [t-1]\n" +
		"passkey:\n  rp_id: example.com\n  origins: [\"https://example.com\"]\n  ceremony_ttl: 2m\n  apple_app_ids: [\"ABCDE12345.com.example.app\"]\n" +
		"vault:\n  addr: https://vault.example:8200\n  token: t\n"
	file := writeConfigFile(t, filepath.Join(dir, "ok"), ok)
	out := captureStdout(t, func() error { return run(ctx, []string{"config", "check", "-config", file}) })
	if !strings.Contains(out, "cust-1") {
		t.Fatalf("config check printed:\n%s", out)
	}
}
