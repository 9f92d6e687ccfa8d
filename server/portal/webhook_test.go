package portal

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

const (
	shareGDrive   = `{"share":"gdrive-share-0001","backupSharePairId":"bsp-1","curve":"ED25519"}`
	sharePasskey  = `{"share":"passkey-share-0002","backupSharePairId":"bsp-2","curve":"SECP256K1"}`
	sharePasskey2 = `{"share":"passkey-share-0003","backupSharePairId":"bsp-3","curve":"SECP256K1"}`
)

func (h *harness) webhook(path, secret string, body any) reply {
	h.t.Helper()
	if secret == "" {
		return h.do(http.MethodPost, path, "", body)
	}
	return h.do(http.MethodPost, path, "", body, WebhookSecretHeader, secret)
}

func (h *harness) fetch(secret, clientID string) []string {
	h.t.Helper()
	r := h.webhook("/webhook/backup/fetch", secret, map[string]string{"clientId": clientID})
	mustStatus(h.t, r, http.StatusOK, "")
	var f FetchResponse
	r.DecodeStrict(h.t, &f)
	if f.BackupShares == nil {
		h.t.Fatalf("backupShares is null: %s", r.Body)
	}
	return f.BackupShares
}

func TestPortalWebhookBackupFetchReplace(t *testing.T) {
	h := newHarness(t, harnessOptions{vault: true})
	if got := h.fetch(testSecret, "client-a"); len(got) != 0 {
		t.Fatalf("fetch before any backup: %q", got)
	}
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519", "share": shareGDrive}), http.StatusNoContent, "")
	// The second, rotated-in secret works as well.
	mustStatus(t, h.webhook("/webhook/backup", testSecret2, map[string]string{"clientId": "client-a", "backupMethod": "PASSKEY-SECP256K1", "share": sharePasskey}), http.StatusNoContent, "")
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-b", "backupMethod": "PASSKEY-SECP256K1", "share": sharePasskey2}), http.StatusNoContent, "")

	got := h.fetch(testSecret, "client-a")
	if len(got) != 2 || got[0] != shareGDrive || got[1] != sharePasskey {
		t.Fatalf("fetch: %q", got)
	}
	// Replace one method's share.
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": "PASSKEY-SECP256K1", "share": sharePasskey2}), http.StatusNoContent, "")
	got = h.fetch(testSecret2, "client-a")
	if len(got) != 2 || got[0] != shareGDrive || got[1] != sharePasskey2 {
		t.Fatalf("fetch after replace: %q", got)
	}
	if got := h.fetch(testSecret, "client-b"); len(got) != 1 || got[0] != sharePasskey2 {
		t.Fatalf("client-b: %q", got)
	}
	if got := h.fetch(testSecret, "client-nobody"); len(got) != 0 {
		t.Fatalf("unknown client: %q", got)
	}
}

func TestPortalWebhookRefusals(t *testing.T) {
	h := newHarness(t, harnessOptions{vault: true})
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519", "share": shareGDrive}), http.StatusNoContent, "")
	tests := []struct {
		name   string
		path   string
		secret string
		body   any
		status int
		code   string
	}{
		{"fetch without secret", "/webhook/backup/fetch", "", map[string]string{"clientId": "client-a"}, 401, ErrWebhookSecret.Code},
		{"fetch with a wrong secret", "/webhook/backup/fetch", "wrong-secret-0123456789abcdef", map[string]string{"clientId": "client-a"}, 401, ErrWebhookSecret.Code},
		{"fetch with a prefix of the secret", "/webhook/backup/fetch", testSecret[:20], map[string]string{"clientId": "client-a"}, 401, ErrWebhookSecret.Code},
		{"fetch with the secret and more", "/webhook/backup/fetch", testSecret + "x", map[string]string{"clientId": "client-a"}, 401, ErrWebhookSecret.Code},
		{"backup without secret", "/webhook/backup", "", map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519", "share": "hostile"}, 401, ErrWebhookSecret.Code},
		{"backup with a wrong secret", "/webhook/backup", "wrong-secret-0123456789abcdef", map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519", "share": "hostile"}, 401, ErrWebhookSecret.Code},
		{"backup without clientId", "/webhook/backup", testSecret, map[string]string{"backupMethod": "GDRIVE-ED25519", "share": "hostile"}, 400, ErrClientID.Code},
		{"fetch without clientId", "/webhook/backup/fetch", testSecret, map[string]string{}, 400, ErrClientID.Code},
		{"clientId not a string", "/webhook/backup/fetch", testSecret, `{"clientId":7}`, 400, "invalid_json"},
		{"clientId with a space", "/webhook/backup/fetch", testSecret, map[string]string{"clientId": "client a"}, 400, ErrClientID.Code},
		{"backup without method", "/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "share": "hostile"}, 400, ErrBackupMethod.Code},
		{"backup method too long", "/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": strings.Repeat("M", MaxBackupMethodBytes+1), "share": "hostile"}, 400, ErrBackupMethod.Code},
		{"backup without share", "/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519"}, 400, ErrShare.Code},
		{"share not a string", "/webhook/backup", testSecret, `{"clientId":"client-a","backupMethod":"GDRIVE-ED25519","share":{"a":1}}`, 400, "invalid_json"},
		{"body larger than the server takes", "/webhook/backup", testSecret, `{"clientId":"client-a","backupMethod":"GDRIVE-ED25519","share":"` + strings.Repeat("s", 70<<10) + `"}`, 413, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.webhook(tc.path, tc.secret, tc.body)
			mustStatus(t, r, tc.status, tc.code)
			noSecret(t, r, "gdrive-share-0001")
		})
	}
	// Nothing above changed the share.
	if got := h.fetch(testSecret, "client-a"); len(got) != 1 || got[0] != shareGDrive {
		t.Fatalf("fetch: %q", got)
	}
}

func TestPortalWebhookAllowList(t *testing.T) {
	h := newHarness(t, harnessOptions{vault: true, portal: func(o *Options) { o.WebhookAllowedIPs = []string{"203.0.113.0/24"} }})
	r := h.webhook("/webhook/backup/fetch", testSecret, map[string]string{"clientId": "client-a"})
	mustStatus(t, r, http.StatusForbidden, ErrWebhookSource.Code)

	h2 := newHarness(t, harnessOptions{vault: true, portal: func(o *Options) { o.WebhookAllowedIPs = []string{"127.0.0.1"} }})
	mustStatus(t, h2.webhook("/webhook/backup/fetch", testSecret, map[string]string{"clientId": "client-a"}), http.StatusOK, "")
}

func TestPortalWebhookNotConfigured(t *testing.T) {
	// No share store: 503, whatever the secret.
	h := newHarness(t, harnessOptions{})
	mustStatus(t, h.webhook("/webhook/backup/fetch", testSecret, map[string]string{"clientId": "client-a"}), http.StatusServiceUnavailable, ErrWebhookOff.Code)
	// No secret: 503 too, never an open webhook.
	h2 := newHarness(t, harnessOptions{vault: true, portal: func(o *Options) { o.WebhookSecrets = []secret.String{} }})
	mustStatus(t, h2.webhook("/webhook/backup/fetch", "", map[string]string{"clientId": "client-a"}), http.StatusServiceUnavailable, ErrWebhookOff.Code)
	mustStatus(t, h2.webhook("/webhook/backup/fetch", testSecret, map[string]string{"clientId": "client-a"}), http.StatusServiceUnavailable, ErrWebhookOff.Code)
}

func TestPortalWebhookVaultDown(t *testing.T) {
	h := newHarness(t, harnessOptions{vault: true, portal: func(o *Options) { o.WebhookTimeout = 3 * time.Second }})
	mustStatus(t, h.webhook("/webhook/backup", testSecret, map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519", "share": shareGDrive}), http.StatusNoContent, "")
	h.vault.Stop()
	// Bounded: the answer is a 503 (with Retry-After), never a hang.
	for _, path := range []string{"/webhook/backup", "/webhook/backup/fetch"} {
		r := h.webhook(path, testSecret, map[string]string{"clientId": "client-a", "backupMethod": "GDRIVE-ED25519", "share": sharePasskey})
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s with Vault down: %d %s", path, r.Status, r.Body)
		}
		noSecret(t, r, "gdrive-share-0001")
	}
}
