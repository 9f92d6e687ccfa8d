package portal

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server/httpx"
)

// WebhookSecretHeader carries the webhook secret Portal's dashboard holds.
const WebhookSecretHeader = "X-Webhook-Secret"

// WebhookAuth runs before the webhook handlers: the shares and the Vault
// store must be configured, the source address allowed (when an allow
// list is set), and X-Webhook-Secret must equal one configured secret.
// The secret is compared with every configured one, as SHA-256 digests in
// constant time, so neither its value nor its length nor which secret
// matched shows in the timing. The work that follows is bounded by
// WebhookTimeout, so Portal gets an answer inside its 10 s.
func (a *Adapter) WebhookAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(a.secretHash) == 0 || a.shares == nil {
			return ErrWebhookOff
		}
		ctx := c.Request().Context()
		if len(a.allowedNets) > 0 && !a.allowedSource(c.RealIP()) {
			a.audit.Refusal(ctx, event(c, audit.ActionRefusal, "", "", ErrWebhookSource.Code))
			return ErrWebhookSource
		}
		got := sha256.Sum256([]byte(c.Request().Header.Get(WebhookSecretHeader)))
		match := 0
		for _, h := range a.secretHash {
			match |= subtle.ConstantTimeCompare(got[:], h[:])
		}
		if match != 1 || c.Request().Header.Get(WebhookSecretHeader) == "" {
			a.audit.Refusal(ctx, event(c, audit.ActionRefusal, "", "", ErrWebhookSecret.Code))
			return ErrWebhookSecret
		}
		httpx.SetActor(c, "portal-webhook")
		ctx, cancel := context.WithTimeout(ctx, a.opts.WebhookTimeout)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

func (a *Adapter) allowedSource(addr string) bool {
	ip := net.ParseIP(addr)
	if ip == nil {
		return false
	}
	for _, n := range a.allowedNets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// backupRequest is POST /webhook/backup's body.
type backupRequest struct {
	ClientID     string  `json:"clientId"`
	BackupMethod string  `json:"backupMethod"`
	Share        *string `json:"share"`
}

func (r *backupRequest) Validate() error {
	if err := CheckClientID(r.ClientID); err != nil {
		return err
	}
	if err := checkBackupMethod(r.BackupMethod); err != nil {
		return err
	}
	if r.Share == nil || *r.Share == "" {
		return ErrShare
	}
	return nil
}

// checkBackupMethod accepts Portal's free-form backupMethod ("PASSKEY-
// SECP256K1", "GDRIVE-ED25519", …), stored as given.
func checkBackupMethod(m string) error {
	if m == "" || len(m) > MaxBackupMethodBytes || !utf8.ValidString(m) || strings.IndexByte(m, 0) >= 0 {
		return ErrBackupMethod
	}
	return nil
}

// fetchRequest is POST /webhook/backup/fetch's body.
type fetchRequest struct {
	ClientID string `json:"clientId"`
}

func (r *fetchRequest) Validate() error { return CheckClientID(r.ClientID) }

// FetchResponse is POST /webhook/backup/fetch's answer.
type FetchResponse struct {
	BackupShares []string `json:"backupShares"`
}

// WebhookBackup stores a custodian backup share for (client, backupMethod),
// replacing the one there (kept as a prior version). The audit line is
// durable before the share is written, and the share is committed before
// the answer: Portal fetches right after.
func (a *Adapter) WebhookBackup(c echo.Context) error {
	var req backupRequest
	if err := bind(c, &req, maxWebhookBody); err != nil {
		return err
	}
	ctx := c.Request().Context()
	owner := string(ClientOwner(req.ClientID))
	ev := event(c, audit.ActionStore, owner, req.BackupMethod, "")
	ev.Fields = map[string]string{"kind": "custodian_share", "via": "portal_webhook"}
	if err := a.audit.Record(ctx, ev); err != nil {
		return err
	}
	share := []byte(*req.Share)
	defer clear(share)
	if _, err := a.shares.Put(ctx, owner, req.BackupMethod, share); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// WebhookFetch answers every current share of the client, as the strings
// Portal gave, ordered by backup method.
func (a *Adapter) WebhookFetch(c echo.Context) error {
	var req fetchRequest
	if err := bind(c, &req, maxSmallBody); err != nil {
		return err
	}
	ctx := c.Request().Context()
	owner := string(ClientOwner(req.ClientID))
	shares, err := a.shares.List(ctx, owner)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range shares {
			s.Share.Wipe()
		}
	}()
	ev := event(c, audit.ActionRelease, owner, "custodian_shares", "")
	ev.Fields = map[string]string{"kind": "custodian_share", "via": "portal_webhook", "count": strconv.Itoa(len(shares))}
	if err := a.audit.Record(ctx, ev); err != nil {
		return err
	}
	out := FetchResponse{BackupShares: make([]string, 0, len(shares))}
	for _, s := range shares {
		out.BackupShares = append(out.BackupShares, string(s.Share.Reveal()))
	}
	noStore(c)
	return c.JSON(http.StatusOK, out)
}
