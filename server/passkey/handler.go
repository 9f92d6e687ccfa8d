package passkey

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
)

// DefaultMaxBodyBytes bounds a request body when Handler.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 10

// Handler serves the passkey routes over a [Service]. Handlers are thin:
// bind, validate, one service call, JSON. Errors are returned as
// *apierr.Error for the server's central error handler.
type Handler struct {
	Service *Service
	// Sessions verifies the user session tokens of registration/begin.
	Sessions *enclave.SessionTokens
	// MaxBodyBytes bounds request bodies (413 beyond); zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Actor names the admin caller in audit lines; nil means "admin".
	Actor func(c echo.Context) string
}

// bind reads the body under the one JSON rule set (httpx.Bind: unknown
// members refused, so a misspelt recipientPublicKey never silently
// releases a key in the clear) within MaxBodyBytes.
func (h *Handler) bind(c echo.Context, v httpx.Validator) error {
	limit := h.MaxBodyBytes
	if limit == 0 {
		limit = DefaultMaxBodyBytes
	}
	return httpx.Bind(c, v, limit)
}

func validCeremonyID(id string) error {
	if id == "" || len(id) > 128 {
		return apierr.ErrBadRequest.WithMessage("ceremonyId is required")
	}
	return nil
}

func validCredential(raw json.RawMessage) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ErrInvalidCredential.WithMessage("credential is required")
	}
	return nil
}

type registrationBeginRequest struct {
	DisplayName         string `json:"displayName"`
	AssertionCeremonyID string `json:"assertionCeremonyId"`
}

func (r *registrationBeginRequest) Validate() error {
	if len(r.DisplayName) > 128 || len(r.AssertionCeremonyID) > 128 {
		return apierr.ErrBadRequest.WithMessage("displayName or assertionCeremonyId is too long")
	}
	return nil
}

// Optional: every member is optional, so the body may be empty.
func (*registrationBeginRequest) Optional() {}

type registrationBeginResponse struct {
	CeremonyID  string                                      `json:"ceremonyId"`
	PublicKey   protocol.PublicKeyCredentialCreationOptions `json:"publicKey"`
	ExpiresAt   time.Time                                   `json:"expiresAt"`
	KeyRequired bool                                        `json:"keyRequired"`
	// ClaimsImportedKey: finish, without a key, claims the imported key.
	ClaimsImportedKey bool `json:"claimsImportedKey"`
}

// RegistrationBegin is POST /v1/passkeys/registration/begin.
func (h *Handler) RegistrationBegin(c echo.Context) error {
	tok, ok := httpx.Bearer(c.Request().Header.Get(echo.HeaderAuthorization))
	if !ok {
		return apierr.ErrUnauthorized.WithMessage("registration needs Authorization: Bearer <user session token>")
	}
	claims, err := h.Sessions.Verify(tok)
	if err != nil {
		return err
	}
	var req registrationBeginRequest
	if err := h.bind(c, &req); err != nil {
		return err
	}
	if err := ValidUserID(claims.UserID); err != nil {
		return err
	}
	out, err := h.Service.BeginRegistration(c.Request().Context(), RegistrationRequest{
		Subject: UserSubject(claims.UserID), DisplayName: req.DisplayName,
		AssertionCeremonyID: req.AssertionCeremonyID, ClientAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, registrationBeginResponse{CeremonyID: out.CeremonyID, PublicKey: out.Options,
		ExpiresAt: out.Expires.UTC(), KeyRequired: out.KeyRequired, ClaimsImportedKey: out.ClaimsImportedKey})
}

type registrationFinishRequest struct {
	CeremonyID string          `json:"ceremonyId"`
	Credential json.RawMessage `json:"credential"`
	// key (base64), or sealedKey/enc/suite sealed to the appliance key
	// (opened by the service once the ceremony names the owner).
	httpx.StoreKeyInput

	key    []byte
	sealed *keys.SealedKey
}

func (r *registrationFinishRequest) Validate() error {
	if err := validCeremonyID(r.CeremonyID); err != nil {
		return err
	}
	if err := validCredential(r.Credential); err != nil {
		return err
	}
	sk, err := r.Sealed()
	if err != nil {
		return err
	}
	r.sealed = sk
	if r.Key != nil {
		k, err := httpx.DecodeKey(*r.Key)
		if err != nil {
			return ErrInvalidKey
		}
		r.key = k.Reveal()
	}
	return nil
}

type registrationFinishResponse struct {
	UserID       string `json:"userId"`
	CredentialID string `json:"credentialId"`
	KeyStored    bool   `json:"keyStored"`
	KeyReplaced  bool   `json:"keyReplaced"`
	KeyClaimed   bool   `json:"keyClaimed"`
}

// RegistrationFinish is POST /v1/passkeys/registration/finish.
func (h *Handler) RegistrationFinish(c echo.Context) error {
	var req registrationFinishRequest
	if err := h.bind(c, &req); err != nil {
		return err
	}
	defer clear(req.key)
	out, err := h.Service.FinishRegistration(c.Request().Context(), FinishRegistrationRequest{
		CeremonyID: req.CeremonyID, Credential: req.Credential, Key: req.key, SealedKey: req.sealed, ClientAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, registrationFinishResponse{UserID: out.Subject.UserID, CredentialID: out.CredentialID,
		KeyStored: out.KeyStored, KeyReplaced: out.KeyReplaced, KeyClaimed: out.KeyClaimed})
}

type authenticationBeginRequest struct {
	UserID             *string `json:"userId"`
	RecipientPublicKey string  `json:"recipientPublicKey"`

	recipient []byte
}

func (r *authenticationBeginRequest) Validate() error {
	if r.UserID != nil {
		if err := ValidUserID(*r.UserID); err != nil {
			return err
		}
	}
	if r.RecipientPublicKey != "" {
		k, ok := httpx.DecodeBase64(r.RecipientPublicKey)
		if !ok {
			return apierr.ErrBadRequest.WithMessage("recipientPublicKey is not base64")
		}
		if err := enclave.ValidRecipientKey(k); err != nil {
			return err
		}
		r.recipient = k
	}
	return nil
}

// Optional: {} (or no body) begins a discoverable ceremony.
func (*authenticationBeginRequest) Optional() {}

type authenticationBeginResponse struct {
	CeremonyID string                                     `json:"ceremonyId"`
	PublicKey  protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
	Nonce      string                                     `json:"nonce,omitempty"`
	ExpiresAt  time.Time                                  `json:"expiresAt"`
}

// AuthenticationBegin is POST /v1/passkeys/authentication/begin.
func (h *Handler) AuthenticationBegin(c echo.Context) error {
	var req authenticationBeginRequest
	if err := h.bind(c, &req); err != nil {
		return err
	}
	sreq := AuthenticationRequest{RecipientPublicKey: req.recipient, ClientAddr: c.RealIP()}
	if req.UserID != nil {
		s := UserSubject(*req.UserID)
		sreq.Subject = &s
	}
	out, err := h.Service.BeginAuthentication(c.Request().Context(), sreq)
	if err != nil {
		return err
	}
	resp := authenticationBeginResponse{CeremonyID: out.CeremonyID, PublicKey: out.Options, ExpiresAt: out.Expires.UTC()}
	if out.Nonce != nil {
		resp.Nonce = base64.RawURLEncoding.EncodeToString(out.Nonce)
	}
	return writeAuthenticationBegin(c, &resp)
}

type authenticationFinishRequest struct {
	CeremonyID         string          `json:"ceremonyId"`
	Credential         json.RawMessage `json:"credential"`
	RecipientPublicKey string          `json:"recipientPublicKey"`

	recipient []byte
}

func (r *authenticationFinishRequest) Validate() error {
	if err := validCeremonyID(r.CeremonyID); err != nil {
		return err
	}
	if err := validCredential(r.Credential); err != nil {
		return err
	}
	if r.RecipientPublicKey != "" {
		k, ok := httpx.DecodeBase64(r.RecipientPublicKey)
		if !ok {
			return apierr.ErrBadRequest.WithMessage("recipientPublicKey is not base64")
		}
		r.recipient = k
	}
	return nil
}

// authenticationFinishResponse carries the key either in the clear (Key)
// or sealed (SealedKey, Enc, Suite), never both.
type authenticationFinishResponse struct {
	UserID              string `json:"userId"`
	CredentialID        string `json:"credentialId"`
	Key                 string `json:"key,omitempty"`
	SealedKey           string `json:"sealedKey,omitempty"`
	Enc                 string `json:"enc,omitempty"`
	Suite               string `json:"suite,omitempty"`
	AssertionCeremonyID string `json:"assertionCeremonyId,omitempty"`
}

// AuthenticationFinish is POST /v1/passkeys/authentication/finish.
func (h *Handler) AuthenticationFinish(c echo.Context) error {
	var req authenticationFinishRequest
	if err := h.bind(c, &req); err != nil {
		return err
	}
	out, err := h.Service.FinishAuthentication(c.Request().Context(), FinishAuthenticationRequest{
		CeremonyID: req.CeremonyID, Credential: req.Credential, RecipientPublicKey: req.recipient, ClientAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	resp := authenticationFinishResponse{UserID: out.Subject.UserID, CredentialID: out.CredentialID, AssertionCeremonyID: out.ProofID}
	if out.Sealed != nil {
		resp.SealedKey = base64.StdEncoding.EncodeToString(out.Sealed.Ciphertext)
		resp.Enc = base64.StdEncoding.EncodeToString(out.Sealed.Enc)
		resp.Suite = out.Sealed.Suite
	} else {
		resp.Key = base64.StdEncoding.EncodeToString(out.Key.Reveal())
		out.Key.Wipe()
	}
	return writeAuthenticationFinish(c, &resp)
}

func (h *Handler) actor(c echo.Context) string {
	if h.Actor != nil {
		return h.Actor(c)
	}
	return "admin"
}

func adminOwner(c echo.Context) (enclave.Owner, error) {
	id := c.Param("userId")
	if err := ValidUserID(id); err != nil {
		return "", err
	}
	return enclave.UserOwner(id), nil
}

type adminListResponse struct {
	UserID   string        `json:"userId"`
	Passkeys []PasskeyInfo `json:"passkeys"`
}

// AdminList is GET /v1/admin/users/:userId/passkeys.
func (h *Handler) AdminList(c echo.Context) error {
	owner, err := adminOwner(c)
	if err != nil {
		return err
	}
	list, err := h.Service.ListPasskeys(c.Request().Context(), owner)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, adminListResponse{UserID: c.Param("userId"), Passkeys: list})
}

// AdminRevoke is DELETE /v1/admin/users/:userId/passkeys/:credentialId.
func (h *Handler) AdminRevoke(c echo.Context) error {
	owner, err := adminOwner(c)
	if err != nil {
		return err
	}
	if err := h.Service.RevokePasskey(c.Request().Context(), owner, c.Param("credentialId"), h.actor(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// AdminReset is POST /v1/admin/users/:userId/passkeys/reset.
func (h *Handler) AdminReset(c echo.Context) error {
	owner, err := adminOwner(c)
	if err != nil {
		return err
	}
	out, err := h.Service.ResetPasskeys(c.Request().Context(), owner, h.actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// wellKnownRP is the relying party whose ID is the request's host, or
// the default one.
func (h *Handler) wellKnownRP(c echo.Context) *relyingParty {
	host := c.Request().Host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	for _, rp := range h.Service.rps {
		if strings.EqualFold(rp.cfg.ID, host) {
			return rp
		}
	}
	return h.Service.rps[0]
}

// AppleAppSiteAssociation is GET /.well-known/apple-app-site-association:
// the webcredentials apps of the RP, so iOS lets those apps use passkeys
// of this domain.
func (h *Handler) AppleAppSiteAssociation(c echo.Context) error {
	rp := h.wellKnownRP(c)
	if len(rp.cfg.AppleAppIDs) == 0 {
		return apierr.ErrNotFound.WithMessage("no Apple app ids are configured for %s", rp.cfg.ID)
	}
	type apps struct {
		Apps []string `json:"apps"`
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=3600")
	return c.JSON(http.StatusOK, map[string]apps{"webcredentials": {Apps: rp.cfg.AppleAppIDs}})
}

type assetLink struct {
	Relation []string `json:"relation"`
	Target   struct {
		Namespace    string   `json:"namespace"`
		PackageName  string   `json:"package_name"`
		Fingerprints []string `json:"sha256_cert_fingerprints"`
	} `json:"target"`
}

// AssetLinks is GET /.well-known/assetlinks.json: the Android apps of the
// RP with the get_login_creds relation, fingerprints as colon-hex.
func (h *Handler) AssetLinks(c echo.Context) error {
	rp := h.wellKnownRP(c)
	if len(rp.cfg.AndroidApps) == 0 {
		return apierr.ErrNotFound.WithMessage("no Android apps are configured for %s", rp.cfg.ID)
	}
	out := make([]assetLink, 0, len(rp.cfg.AndroidApps))
	for _, app := range rp.cfg.AndroidApps {
		var l assetLink
		l.Relation = []string{"delegate_permission/common.get_login_creds"}
		l.Target.Namespace, l.Target.PackageName = "android_app", app.Package
		for _, f := range app.Fingerprints {
			fp, _ := ParseFingerprint(f)
			l.Target.Fingerprints = append(l.Target.Fingerprints, colonHex(fp))
		}
		out = append(out, l)
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=3600")
	return c.JSON(http.StatusOK, out)
}

// ProofHeader carries a passkey proof on GET /v1/me/events: the
// assertionCeremonyId that authentication/finish answered.
const ProofHeader = "X-Passkey-Proof"

// EventsOwner authenticates GET /v1/me/events by a passkey proof (the
// ProofHeader): it uses up the proof and returns its owner. A proof is
// single use: the list costs one passkey authentication.
func (h *Handler) EventsOwner(c echo.Context) (string, error) {
	id := strings.TrimSpace(c.Request().Header.Get(ProofHeader))
	if id == "" {
		return "", ErrProofInvalid.WithMessage(ProofHeader + " is missing")
	}
	subj, err := h.Service.TakeProof(c.Request().Context(), id)
	if err != nil {
		return "", err
	}
	return string(subj.Owner), nil
}
