package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckRefusesWhatServeRefuses: every setting that `serve`
// refuses (in the configuration's own rules, in its wiring, or in a
// service's own Options.Validate) is refused by `config check` too, naming
// the setting; and `serve` refuses it before it touches the TPM. The table
// has bad values for every section.
func TestConfigCheckRefusesWhatServeRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := fmt.Sprintf("listen:\n  plain_http: true\ndata:\n  dir: %s\ntpm:\n  path: tcp://127.0.0.1:1\n  pcrs: [7]\n", filepath.Join(dir, "data"))
	const rp = "passkey:\n  rp_id: example.com\n"
	cases := []struct {
		name, yaml string
		env        []string // KEYWARDEN_… settings, for the sections the base sets
		field      string   // named in the error
		also       string   // and this text
	}{
		{name: "listen address not host:port", env: []string{"KEYWARDEN_LISTEN_ADDR=nope"}, field: "listen.addr", also: "host:port"},
		{name: "admin listener on the public address", env: []string{"KEYWARDEN_LISTEN_ADDR=127.0.0.1:9000", "KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:9000"}, field: "listen.admin_addr"},
		{name: "TLS without a certificate", env: []string{"KEYWARDEN_LISTEN_PLAIN_HTTP=false"}, field: "listen.tls_cert"},
		{name: "wildcard CORS origin", env: []string{"KEYWARDEN_LISTEN_CORS_ORIGINS=*"}, field: "listen.cors_origins", also: "pattern"},
		{name: "no data folder", env: []string{"KEYWARDEN_DATA_DIR="}, field: "data.dir"},
		{name: "PCR out of range", env: []string{"KEYWARDEN_TPM_PCRS=24"}, field: "tpm.pcrs", also: "24"},
		{name: "simulator outside dev mode", env: []string{"KEYWARDEN_TPM_PATH=simulator"}, field: "tpm.path", also: "dev"},
		{name: "admin key hash not sha256", yaml: "admin:\n  key_hashes: [\"md5:abc\"]\n", field: "admin.key_hashes"},
		{name: "plain-text admin key outside dev mode", yaml: "admin:\n  key: plain-text-admin-key\n", field: "admin.key", also: "dev mode only"},
		{name: "session TTL over its maximum", yaml: "session:\n  ttl: 2h\n", field: "session.ttl"},
		{name: "body limit too small", yaml: "limits:\n  max_body_bytes: 12\n", field: "limits.max_body_bytes"},
		{name: "passkey RP ID with a scheme", yaml: rp[:len("passkey:\n")] + "  rp_id: https://example.com\n  origins: [\"https://example.com\"]\n", field: "passkey.rp_id", also: "https://example.com"},
		{name: "passkey origin with a path", yaml: rp + "  origins: [\"example.com/path\"]\n", field: "passkey.origins", also: "example.com/path"},
		{name: "passkey RP ID without origins", yaml: rp, field: "passkey.origins", also: "at least one"},
		{name: "passkey user verification unknown", yaml: rp + "  origins: [\"https://example.com\"]\n  user_verification: sometimes\n", field: "passkey.user_verification", also: "required, preferred or discouraged"},
		{name: "passkey ceremony TTL too short", yaml: rp + "  origins: [\"https://example.com\"]\n  ceremony_ttl: 5s\n", field: "passkey.ceremony_ttl", also: "10s"},
		{name: "passkey origin of another site", yaml: rp + "  origins: [\"https://evil.example\"]\n", field: "passkey.origins", also: "evil.example"},
		{name: "Apple app id without a team", yaml: rp + "  origins: [\"https://example.com\"]\n  apple_app_ids: [\"com.example.app\"]\n", field: "passkey.apple_app_ids", also: "team"},
		{name: "Firebase project id with a space", yaml: "firebase:\n  project_ids: [\"proj a\"]\n", field: "firebase.project_ids", also: "proj a"},
		{name: "Firebase leeway over 5m", yaml: "firebase:\n  project_ids: [proj-a]\n  leeway: 1h\n", field: "firebase.leeway", also: "5m"},
		{name: "plain http certificate URL", yaml: "firebase:\n  project_ids: [proj-a]\n  certs_url: http://certs.example/x509\n", field: "firebase.certs_url", also: "loopback"},
		{name: "Firebase tenant with a slash", yaml: "firebase:\n  project_ids: [proj-a]\n  tenants: [\"a/b\"]\n", field: "firebase.tenants", also: "a/b"},
		{name: "Vault without credentials", yaml: "vault:\n  addr: https://vault.example:8200\n", field: "vault.token", also: "exactly one"},
		{name: "Vault with two credentials", yaml: "vault:\n  addr: https://vault.example:8200\n  token: t\n  role_id: r\n  secret_id: s\n", field: "vault.token", also: "exactly one"},
		{name: "Vault tpm-cert with a token", yaml: "vault:\n  addr: https://vault.example:8200\n  auth: tpm-cert\n  tls_cert_file: /c.pem\n  token: t\n", field: "vault.token", also: "tpm-cert"},
		{name: "Vault tpm-cert without a certificate", yaml: "vault:\n  addr: https://vault.example:8200\n  auth: tpm-cert\n", field: "vault.tls_cert_file", also: "vault csr"},
		{name: "Vault auth unknown", yaml: "vault:\n  addr: https://vault.example:8200\n  auth: kerberos\n  token: t\n", field: "vault.auth", also: "tpm-cert"},
		{name: "Vault over ftp", yaml: "vault:\n  addr: ftp://x\n  token: t\n", field: "vault.addr"},
		{name: "plain http Vault", yaml: "vault:\n  addr: http://vault.internal:8200\n  token: t\n", field: "vault.addr", also: `vault.addr: "http://vault.internal:8200": plain http is allowed only to a loopback address`},
		{name: "Vault retries over 10", yaml: "vault:\n  addr: https://vault.example:8200\n  token: t\n  max_retries: 11\n", field: "vault.max_retries"},
		{name: "Vault key name with a slash", yaml: "vault:\n  addr: https://vault.example:8200\n  token: t\n  key_name: a/b\n", field: "vault.key_name"},
		{name: "plain http Portal API URL", yaml: "portal:\n  custodian_id: cust-1\n  api_url: http://api.portal.example\n", field: "portal.api_url", also: "loopback"},
		{name: "webhook secrets without a custodian", yaml: "portal:\n  webhook_secrets: [\"0123456789abcdef0123\"]\n", field: "portal.custodian_id", also: "webhook_secrets"},
		{name: "short webhook secret", yaml: "portal:\n  custodian_id: cust-1\n  webhook_secrets: [short]\n", field: "portal.webhook_secrets", also: "16"},
		{name: "webhook allowed IP not an IP", yaml: "portal:\n  custodian_id: cust-1\n  webhook_allowed_ips: [\"portal.example\"]\n", field: "portal.webhook_allowed_ips", also: "portal.example"},
		{name: "Portal identity TTL over a day", yaml: "portal:\n  custodian_id: cust-1\n  identity_ttl: 48h\n", field: "portal.identity_ttl", also: "24h"},
		{name: "Portal custodian id too long", yaml: "portal:\n  custodian_id: " + strings.Repeat("c", 300) + "\n", field: "portal.custodian_id", also: "256"},
		{name: "Portal client mismatch unknown", yaml: "portal:\n  client_mismatch: sometimes\n", field: "portal.client_mismatch"},
		{name: "recovery recipient not age", yaml: "recovery:\n  recipients: [\"ssh-ed25519 AAAA\"]\n", field: "recovery.recipients", also: "age1"},
		{name: "recovery threshold over the recipients", yaml: "recovery:\n  recipients: [age1aaaa]\n  threshold: 2\n", field: "recovery.threshold"},
		{name: "audit sync delay over 100ms", yaml: "audit:\n  release_sync_delay: 1s\n", field: "audit.release_sync_delay"},
		{name: "log level unknown", yaml: "log:\n  level: loud\n", field: "log.level"},
		{name: "log format unknown", yaml: "log:\n  format: xml\n", field: "log.format"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
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

// TestVaultAddrPlainHTTPOnlyToLoopback: the Vault token and every custodian
// share cross this connection, so plain http is for a Vault on this host
// only (as for Firebase's and Portal's URLs); `config check` says so.
func TestVaultAddrPlainHTTPOnlyToLoopback(t *testing.T) {
	dir := t.TempDir()
	base := fmt.Sprintf("listen:\n  plain_http: true\ndata:\n  dir: %s\ntpm:\n  path: tcp://127.0.0.1:1\n  pcrs: [7]\nvault:\n  token: t\n", filepath.Join(dir, "data"))
	file := writeConfigFile(t, dir, base)
	for addr, ok := range map[string]bool{
		"https://vault.internal:8200":    true,
		"https://10.0.0.8:8200":          true,
		"http://127.0.0.1:8200":          true,
		"http://127.9.9.9:8200":          true,
		"http://[::1]:8200":              true,
		"http://localhost:8200":          true,
		"http://vault.internal:8200":     false,
		"http://10.0.0.8:8200":           false,
		"http://[fd00::1]:8200":          false,
		"http://0.0.0.0:8200":            false,
		"http://localhost.evil.example":  false,
		"http://127.0.0.1.nip.io:8200":   false,
		"http://user@vault.internal":     false,
		"HTTP://vault.internal:8200":     false,
		"http://[::ffff:10.0.0.1]:8200":  false,
		"http://[::ffff:127.0.0.1]:8200": true,
	} {
		t.Setenv("KEYWARDEN_VAULT_ADDR", addr)
		_, _, err := loadConfig([]string{"-config", file}, false)
		if ok && err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "vault.addr")) {
			t.Errorf("%s: error %v does not refuse vault.addr", addr, err)
		}
	}
}
