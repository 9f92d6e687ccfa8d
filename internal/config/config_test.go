package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func prodBase() Config {
	c := Defaults()
	c.Listen.PlainHTTP = true
	c.TPM.PCRs = []int{7}
	return c
}

// TestPCRPolicyRequiredOutsideDev: outside dev mode the root key is sealed
// with a PCR policy (a stolen machine that boots something else does not
// unseal it), unless the operator says in so many words that it need not be.
func TestPCRPolicyRequiredOutsideDev(t *testing.T) {
	base := prodBase()
	base.TPM.PCRs = nil
	_, err := Load(base, "", nil)
	if err == nil || !strings.Contains(err.Error(), "tpm.pcrs") || !strings.Contains(err.Error(), "tpm.allow_no_pcr_policy") {
		t.Fatalf("no PCRs outside dev mode: %v", err)
	}
	if _, err := Load(base, "", []string{"KEYWARDEN_TPM_PCRS=7,11"}); err != nil {
		t.Fatalf("with tpm.pcrs: %v", err)
	}
	c, err := Load(base, "", []string{"KEYWARDEN_TPM_ALLOW_NO_PCR_POLICY=true"})
	if err != nil || !c.TPM.AllowNoPCRPolicy {
		t.Fatalf("with tpm.allow_no_pcr_policy: %v", err)
	}
	if _, err := Load(base, "", []string{"KEYWARDEN_TPM_ALLOW_NO_PCR_POLICY=false"}); err == nil {
		t.Fatal("allow_no_pcr_policy=false accepted without PCRs")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "k.yaml")
	os.WriteFile(p, []byte("tpm:\n  allow_no_pcr_policy: true\n"), 0o600)
	if c, err := Load(base, p, nil); err != nil || !c.TPM.AllowNoPCRPolicy {
		t.Fatalf("allow_no_pcr_policy from a file: %v", err)
	}
	// Dev mode's simulator has nothing to measure: no policy needed.
	if _, err := Load(DevDefaults(), "", []string{"KEYWARDEN_ADMIN_KEY=dev-admin-key-0123456789"}); err != nil {
		t.Fatalf("dev defaults: %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "k.yaml")
	os.WriteFile(file, []byte(`
vault:
  addr: https://vault.file:8200
  token: file-token-123
firebase:
  project_ids: [" proj-a ", proj-b]
passkey:
  rp_id: example.com
  origins: [https://example.com]
session:
  ttl: 2m
`), 0o600)
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("webhook-secret-from-file-0001\n"), 0o600)
	c, err := Load(prodBase(), file, []string{
		"KEYWARDEN_VAULT_ADDR=https://vault.env:8200",
		"KEYWARDEN_PORTAL_WEBHOOK_SECRET_FILE=" + secretFile,
		"KEYWARDEN_TPM_PCRS=7,11",
		"UNRELATED=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Vault.Addr != "https://vault.env:8200" {
		t.Errorf("env did not override file: %s", c.Vault.Addr)
	}
	if c.Vault.Token.Reveal() != "file-token-123" {
		t.Error("file value lost")
	}
	if strings.Join(c.Firebase.ProjectIDs, ",") != "proj-a,proj-b" {
		t.Errorf("project ids not trimmed: %q", c.Firebase.ProjectIDs)
	}
	if c.Session.TTL != 2*time.Minute || c.Session.MaxTTL != time.Hour {
		t.Errorf("durations: %v %v", c.Session.TTL, c.Session.MaxTTL)
	}
	if len(c.Portal.WebhookSecrets) != 1 || c.Portal.WebhookSecrets[0].Reveal() != "webhook-secret-from-file-0001" {
		t.Error("_FILE alias not applied or not trimmed")
	}
	if len(c.TPM.PCRs) != 2 || c.TPM.PCRs[1] != 11 {
		t.Errorf("pcrs %v", c.TPM.PCRs)
	}
	if c.Data.DB != "/var/lib/keywarden/keywarden.db" {
		t.Errorf("derived db path %q", c.Data.DB)
	}
	dump := c.Dump()
	for _, s := range []string{"file-token-123", "webhook-secret-from-file"} {
		if strings.Contains(dump, s) {
			t.Errorf("config dump leaks %q", s)
		}
	}
}

func TestIssueEnvNames(t *testing.T) {
	names := map[string]bool{}
	for _, envs := range EnvNames() {
		for _, e := range envs {
			names[e] = true
		}
	}
	for _, want := range []string{"KEYWARDEN_PORTAL_API_URL", "KEYWARDEN_PORTAL_CUSTODIAN_ID", "KEYWARDEN_PORTAL_WEBHOOK_SECRET", "KEYWARDEN_PORTAL_WEBHOOK_SECRETS", "KEYWARDEN_FIREBASE_PROJECT_ID", "KEYWARDEN_FIREBASE_PROJECT_IDS", "KEYWARDEN_FIREBASE_CERTS_URL", "KEYWARDEN_VAULT_ADDR", "KEYWARDEN_VAULT_TOKEN", "KEYWARDEN_ADMIN_KEY"} {
		if !names[want] {
			t.Errorf("environment name %s is not recognised", want)
		}
	}
	c, err := Load(DevDefaults(), "", []string{"KEYWARDEN_FIREBASE_PROJECT_ID=solo", "KEYWARDEN_PORTAL_API_URL=http://127.0.0.1:9"})
	if err != nil || c.Firebase.ProjectIDs[0] != "solo" || c.Portal.APIURL != "http://127.0.0.1:9" {
		t.Fatalf("aliases: %v %+v", err, c.Firebase.ProjectIDs)
	}
}

// TestValidationNamesTheField covers the configuration's own rules. The
// sections that configure a service are checked by the service's own
// Validate; cmd/keywarden's TestConfigCheckRefusesWhatServeRefuses covers
// them (bad passkey.rp_id, passkey.origins, firebase.leeway, vault.addr,
// portal.webhook_secrets, …) and TestVaultAddrPlainHTTPOnlyToLoopback.
func TestValidationNamesTheField(t *testing.T) {
	cases := map[string][]string{
		"listen.addr":                         {"KEYWARDEN_LISTEN_ADDR=nope"},
		"listen.admin_addr":                   {"KEYWARDEN_LISTEN_ADDR=127.0.0.1:9000", "KEYWARDEN_LISTEN_ADMIN_ADDR=127.0.0.1:9000"},
		"listen.tls_cert":                     {"KEYWARDEN_LISTEN_PLAIN_HTTP=false"},
		"tpm.path":                            {"KEYWARDEN_TPM_PATH=simulator"},
		"tpm.pcrs":                            {"KEYWARDEN_TPM_PCRS=24"},
		"admin.key_hashes":                    {"KEYWARDEN_ADMIN_KEY_HASHES=md5:abc"},
		"admin.key":                           {"KEYWARDEN_ADMIN_KEY=plain-text-admin-key"},
		"session.ttl":                         {"KEYWARDEN_SESSION_TTL=2h"},
		"vault.token":                         {"KEYWARDEN_VAULT_ADDR=http://127.0.0.1:8200"},
		"listen.cors_origins":                 {"KEYWARDEN_LISTEN_CORS_ORIGINS=*"},
		"log.level":                           {"KEYWARDEN_LOG_LEVEL=loud"},
		"limits.max_body_bytes":               {"KEYWARDEN_LIMITS_MAX_BODY_BYTES=12"},
		"KEYWARDEN_SESSION_TTL":               {"KEYWARDEN_SESSION_TTL=soon"},
		"keys.import_claim_window":            {"KEYWARDEN_KEYS_IMPORT_CLAIM_WINDOW=-1h"},
		"keys.import_claim_window: must be 0": {"KEYWARDEN_KEYS_IMPORT_CLAIM_WINDOW=9000h"},
	}
	for want, env := range cases {
		_, err := Load(prodBase(), "", env)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v does not name %s", env, err, want)
		}
	}
	if _, err := Load(prodBase(), "", nil); err != nil {
		t.Fatalf("defaults (plain HTTP) do not validate: %v", err)
	}
	if _, err := Load(DevDefaults(), "", []string{"KEYWARDEN_ADMIN_KEY=dev-admin-key-0123456789"}); err != nil {
		t.Fatalf("dev defaults do not validate: %v", err)
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown setting listen.bogus": "listen:\n  bogus: 1\n",
		"not valid YAML":               "listen: [\n",
		"listen.max_concurrent":        "listen:\n  max_concurrent: lots\n",
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := Load(prodBase(), p, nil); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%q: %v", body, err)
		}
	}
	if _, err := Load(prodBase(), filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("missing file accepted")
	}
}

// TestListSecretFromFile: a …_FILE for a list holds one value per line
// (systemd LoadCredential= files), commas, or both.
func TestListSecretFromFile(t *testing.T) {
	for name, content := range map[string]string{
		"one per line":      "webhook-secret-number-0001\nwebhook-secret-number-0002\n",
		"CRLF, blank lines": "webhook-secret-number-0001\r\n\r\nwebhook-secret-number-0002\r\n",
		"commas":            "webhook-secret-number-0001,webhook-secret-number-0002",
		"both":              "webhook-secret-number-0001,\nwebhook-secret-number-0002\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "secrets")
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(prodBase(), "", []string{"KEYWARDEN_PORTAL_WEBHOOK_SECRETS_FILE=" + f})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range c.Portal.WebhookSecrets {
				got = append(got, s.Reveal())
			}
			if strings.Join(got, "|") != "webhook-secret-number-0001|webhook-secret-number-0002" {
				t.Fatalf("secrets from %q: %q, want the two values", content, got)
			}
		})
	}
}

// TestCORSOriginsAreExact: wildcards and patterns are refused at start, as
// are paths and http for a non-loopback host; exact origins pass.
func TestCORSOriginsAreExact(t *testing.T) {
	for _, bad := range []string{"*", "https://*", "https://*.example.com", "https://app.example.*", "https://example.com/", "https://example.com/app", "http://example.com", "ftp://example.com", "example.com", "https://", "https://App.Example.com", "https://user@example.com"} {
		_, err := Load(prodBase(), "", []string{"KEYWARDEN_LISTEN_CORS_ORIGINS=" + bad})
		if err == nil || !strings.Contains(err.Error(), "listen.cors_origins") {
			t.Errorf("cors origin %q: err = %v, want a refusal naming listen.cors_origins", bad, err)
		}
	}
	for _, good := range []string{"https://app.example.com", "https://app.example.com:8443", "http://localhost:8420", "http://127.0.0.1:3000", "http://[::1]:3000"} {
		if _, err := Load(prodBase(), "", []string{"KEYWARDEN_LISTEN_CORS_ORIGINS=" + good}); err != nil {
			t.Errorf("cors origin %q refused: %v", good, err)
		}
	}
}

// TestImportClaimWindow: 30 days by default, set from the environment, 0
// (no claims) accepted.
func TestImportClaimWindow(t *testing.T) {
	if d := Defaults().Keys.ImportClaimWindow; d != 30*24*time.Hour {
		t.Fatalf("default keys.import_claim_window %v", d)
	}
	for env, want := range map[string]time.Duration{"KEYWARDEN_KEYS_IMPORT_CLAIM_WINDOW=72h": 72 * time.Hour, "KEYWARDEN_KEYS_IMPORT_CLAIM_WINDOW=0": 0} {
		c, err := Load(prodBase(), "", []string{env})
		if err != nil || c.Keys.ImportClaimWindow != want {
			t.Errorf("%s: %v %v", env, c.Keys.ImportClaimWindow, err)
		}
	}
}

// TestRollbackMinInterval: rollback.min_interval defaults to 1 s, is set by
// KEYWARDEN_ROLLBACK_MIN_INTERVAL, and a bad value names the field.
func TestRollbackMinInterval(t *testing.T) {
	c, err := Load(prodBase(), "", nil)
	if err != nil || c.Rollback.MinInterval != time.Second {
		t.Fatalf("default: %v %v", c.Rollback.MinInterval, err)
	}
	c, err = Load(prodBase(), "", []string{"KEYWARDEN_ROLLBACK_MIN_INTERVAL=30s"})
	if err != nil || c.Rollback.MinInterval != 30*time.Second {
		t.Fatalf("env: %v %v", c.Rollback.MinInterval, err)
	}
	for _, v := range []string{"0s", "10ms", "48h"} {
		if _, err := Load(prodBase(), "", []string{"KEYWARDEN_ROLLBACK_MIN_INTERVAL=" + v}); err == nil || !strings.Contains(err.Error(), "rollback.min_interval") {
			t.Errorf("%s: error %v does not name rollback.min_interval", v, err)
		}
	}
}

// TestPINSection: pin.* defaults (on, 10 guesses, 5 min TTLs), the
// environment names, and a bad value names its field; with pin.enabled
// false the other settings are not checked.
func TestPINSection(t *testing.T) {
	c, err := Load(prodBase(), "", nil)
	if err != nil || c.PIN != (PIN{Enabled: true, DefaultGuessLimit: 10, PendingTTL: 5 * time.Minute, RecoveryTTL: 5 * time.Minute}) {
		t.Fatalf("default: %+v %v", c.PIN, err)
	}
	c, err = Load(prodBase(), "", []string{"KEYWARDEN_PIN_DEFAULT_GUESS_LIMIT=3", "KEYWARDEN_PIN_RECOVERY_TTL=2m"})
	if err != nil || c.PIN.DefaultGuessLimit != 3 || c.PIN.RecoveryTTL != 2*time.Minute {
		t.Fatalf("env: %+v %v", c.PIN, err)
	}
	for env, field := range map[string]string{
		"KEYWARDEN_PIN_DEFAULT_GUESS_LIMIT=0":   "pin.default_guess_limit",
		"KEYWARDEN_PIN_DEFAULT_GUESS_LIMIT=256": "pin.default_guess_limit",
		"KEYWARDEN_PIN_PENDING_TTL=0s":          "pin.pending_ttl",
		"KEYWARDEN_PIN_RECOVERY_TTL=2h":         "pin.recovery_ttl",
	} {
		if _, err := Load(prodBase(), "", []string{env}); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v does not name %s", env, err, field)
		}
	}
	if c, err := Load(prodBase(), "", []string{"KEYWARDEN_PIN_ENABLED=false", "KEYWARDEN_PIN_DEFAULT_GUESS_LIMIT=0"}); err != nil || c.PIN.Enabled {
		t.Fatalf("disabled: %+v %v", c.PIN, err)
	}
}

// TestRollbackNode: rollback.node is empty by default (the single-node
// rollback scheme), set by KEYWARDEN_ROLLBACK_NODE, and a name that
// could not be part of the node's meta key names the field.
func TestRollbackNode(t *testing.T) {
	c, err := Load(prodBase(), "", nil)
	if err != nil || c.Rollback.Node != "" {
		t.Fatalf("default: %q %v", c.Rollback.Node, err)
	}
	c, err = Load(prodBase(), "", []string{"KEYWARDEN_ROLLBACK_NODE=node-2.dc1"})
	if err != nil || c.Rollback.Node != "node-2.dc1" {
		t.Fatalf("env: %q %v", c.Rollback.Node, err)
	}
	for _, v := range []string{"a/b", "a b", "nödé", "a\x00b", strings.Repeat("n", 65)} {
		if _, err := Load(prodBase(), "", []string{"KEYWARDEN_ROLLBACK_NODE=" + v}); err == nil || !strings.Contains(err.Error(), "rollback.node") {
			t.Errorf("%q: error %v does not name rollback.node", v, err)
		}
	}
}

// TestVaultTPMCert: with vault.auth tpm-cert the TPM key is the only Vault
// credential, so the configuration refuses any Vault secret, and its dump
// holds none.
func TestVaultTPMCert(t *testing.T) {
	base := []string{"KEYWARDEN_VAULT_ADDR=https://vault.internal:8200", "KEYWARDEN_VAULT_AUTH=tpm-cert"}
	c, err := Load(prodBase(), "", append(base, "KEYWARDEN_VAULT_TLS_CERT_FILE=/etc/keywarden/vault-client.pem"))
	if err != nil {
		t.Fatalf("tpm-cert with a certificate file: %v", err)
	}
	if c.Vault.Auth != "tpm-cert" || c.Vault.TLSCertFile != "/etc/keywarden/vault-client.pem" || !c.Vault.Token.IsZero() {
		t.Fatalf("vault section %+v", c.Vault)
	}
	dump := c.Dump()
	for _, word := range []string{"hvs.", "secret_id\": \"x", "BEGIN"} {
		if strings.Contains(dump, word) {
			t.Fatalf("the dump holds %q", word)
		}
	}
	if !strings.Contains(dump, `"tpm-cert"`) {
		t.Fatal("the dump does not show the auth method")
	}

	cases := map[string][]string{
		"vault.tls_cert_file: required":  base,
		"vault.token: must not be set":   append(append([]string{}, base...), "KEYWARDEN_VAULT_TLS_CERT_FILE=/c.pem", "KEYWARDEN_VAULT_TOKEN=hvs.stolen-from-disk"),
		"vault.token: must not be set ":  append(append([]string{}, base...), "KEYWARDEN_VAULT_TLS_CERT_FILE=/c.pem", "KEYWARDEN_VAULT_ROLE_ID=r", "KEYWARDEN_VAULT_SECRET_ID=s"),
		"vault.token: must not be set  ": append(append([]string{}, base...), "KEYWARDEN_VAULT_TLS_CERT_FILE=/c.pem", "KEYWARDEN_VAULT_CERT_FILE=/c.pem", "KEYWARDEN_VAULT_KEY_FILE=/k.pem"),
		"vault.auth: must be empty":      {"KEYWARDEN_VAULT_ADDR=https://v:8200", "KEYWARDEN_VAULT_AUTH=kerberos"},
		"vault.tls_cert_file: only with": {"KEYWARDEN_VAULT_ADDR=https://v:8200", "KEYWARDEN_VAULT_TOKEN=hvs.x", "KEYWARDEN_VAULT_TLS_CERT_FILE=/c.pem"},
	}
	for want, env := range cases {
		_, err := Load(prodBase(), "", env)
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(want)) {
			t.Errorf("%v: error %v does not say %q", env, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hvs.stolen-from-disk") {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}
