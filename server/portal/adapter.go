package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/server/passkey"
)

// OwnerPrefix starts the owner of every record the adapter keeps for a
// Portal client (passkeys, their key, custodian shares): "portal:<clientId>".
const OwnerPrefix = "portal:"

// ClientOwner is the owner of a Portal client's records.
func ClientOwner(clientID string) enclave.Owner { return enclave.Owner(OwnerPrefix + clientID) }

// ShareStore keeps custodian backup shares by (owner, method), wrapped
// with Vault Transit (custodian.Service).
type ShareStore interface {
	// Put wraps and stores share durably under (owner, method), replacing
	// (and keeping as a prior version) any share there.
	Put(ctx context.Context, owner, method string, share []byte) (replaced bool, err error)
	// List opens every current share of owner, ordered by method.
	List(ctx context.Context, owner string) ([]custodian.Share, error)
}

// Adapter serves Portal's SDK wire protocol over the appliance's own
// services. It keeps no record of its own: Firebase keys go through the
// server's StoreKey/ReleaseKey, passkeys through the passkey service,
// shares through the custodian service. Its only state is the identity
// cache and the key (a root subkey) that binds a sessionId to its client.
type Adapter struct {
	opts     Options
	resolver *Resolver
	pk       *passkey.Service
	shares   ShareStore
	log      *slog.Logger
	now      func() time.Time
	keys     *keys.Service
	fb       *firebase.HTTP
	audit    keys.Auditor

	sessionKey  []byte
	secretHash  [][32]byte
	allowedNets []*net.IPNet

	// beforeRelease, when set by a test, runs in tbsGet just before the
	// key is read for release (to change the record in between).
	beforeRelease func()
}

// New validates opts and returns the adapter (server.Options.Portal; the
// routes tables mount its methods).
//
// With portal.client_mismatch refuse (the default) it turns on the
// custody's client isolation rule (deps.Custody), so the native Firebase
// routes obey it too: a key stored through a Portal client is refused (403
// client_mismatch) to every other client and to the native routes.
func New(opts Options, deps Deps) (*Adapter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if deps.Keys == nil || deps.Firebase == nil || deps.Audit == nil {
		return nil, errors.New("portal: Deps.Keys, Deps.Firebase and Deps.Audit are required")
	}
	o := opts.withDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	r, err := NewResolver(opts, deps.Logger, deps.Clock)
	if err != nil {
		return nil, err
	}
	a := &Adapter{opts: o, resolver: r, pk: deps.Passkey, shares: deps.Shares, log: deps.Logger, now: deps.Clock, keys: deps.Keys, fb: deps.Firebase, audit: deps.Audit,
		sessionKey: make([]byte, 32)}
	if deps.Custody != nil {
		// A root subkey: every node of a cluster shares the root key, so a
		// sessionId begun on one node is checked on any other.
		k := deps.Custody.Root().Subkey(enclave.SubkeyPortalSession)
		copy(a.sessionKey, k.Reveal())
		k.Wipe()
	} else {
		_, _ = rand.Read(a.sessionKey) // one node only (tests)
	}
	if deps.Custody != nil && !o.AllowClientMismatch {
		deps.Custody.SetClientIsolation(true)
	}
	for _, s := range o.WebhookSecrets {
		a.secretHash = append(a.secretHash, sha256.Sum256([]byte(s.Reveal())))
	}
	for _, p := range o.WebhookAllowedIPs {
		n, _ := parseNet(p)
		a.allowedNets = append(a.allowedNets, n)
	}
	return a, nil
}

// Resolver is the adapter's identity resolver (for metrics and tests).
func (a *Adapter) Resolver() *Resolver { return a.resolver }

// credential reads the Portal client credential and checks its shape.
func credential(c echo.Context) (string, error) {
	tok, ok := httpx.Bearer(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok {
		return "", ErrCredentialMissing
	}
	if err := CheckCredential(tok); err != nil {
		return "", err
	}
	return tok, nil
}

// resolve turns the checked credential into the caller's client, auditing
// (sampled) a refusal.
func (a *Adapter) resolve(c echo.Context, cred string) (Client, error) {
	client, err := a.resolver.Resolve(c.Request().Context(), cred, c.RealIP(), httpx.RequestID(c))
	if err != nil {
		if e, ok := apierr.As(err); ok && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden) {
			a.audit.Refusal(c.Request().Context(), event(c, audit.ActionRefusal, "", "", e.Code))
		}
		return Client{}, err
	}
	httpx.SetActor(c, string(ClientOwner(client.ID)))
	return client, nil
}

// event is the audit event of this request (keys.Request.Event, the one
// place events are built).
func event(c echo.Context, action, owner, method, reason string) audit.Event {
	return httpx.KeysRequest(c).Event(action, enclave.Owner(owner), method, reason)
}

// validator is a request body that checks itself after decoding.
type validator = httpx.Validator

// bind decodes one JSON object of at most limit bytes into v and
// validates it, under the one rule set (httpx.Bind). The SDK's and
// Portal's bodies are foreign shapes (httpx.ForeignShape): members a newer
// SDK adds are ignored. Values are never echoed in errors.
func bind(c echo.Context, v validator, limit int64) error {
	return httpx.Bind(c, v, limit)
}

// ok answers a write: the SDK ignores the body, but a JSON object parses
// in every client.
func ok(c echo.Context, status int) error {
	return c.JSONBlob(status, []byte("{}"))
}

func noStore(c echo.Context) {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
}

// FlushIdentities is DELETE /v1/admin/portal/identities.
func (a *Adapter) FlushIdentities(c echo.Context) error {
	ev := event(c, "admin_portal_identities_flush", "", "", "")
	if err := a.audit.Record(c.Request().Context(), ev); err != nil {
		return err
	}
	n := a.resolver.Flush()
	return c.JSON(http.StatusOK, map[string]int{"flushed": n})
}

// The request bodies of the SDK and of Portal's backend are shapes Portal
// defines: members a newer version adds are ignored (httpx.ForeignShape).
func (*encryptKeyRequest) ForeignShape() {}
func (*beginRequest) ForeignShape()      {}
func (*finishRequest) ForeignShape()     {}
func (*backupRequest) ForeignShape()     {}
func (*fetchRequest) ForeignShape()      {}
