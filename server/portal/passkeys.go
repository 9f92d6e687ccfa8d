package portal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/passkey"
)

// Passkey status values of GET /passkeys/status. The SDK writes through
// finish-login/write when the status is StatusRegisteredWithKey and
// registers otherwise.
const (
	StatusNotRegistered     = "not registered"             // no passkey, no key
	StatusRegistered        = "registered"                 // a passkey, no key yet
	StatusRegisteredWithKey = "registered with credential" // a key is stored
)

// Wire shapes of the passkey routes. Every member the SDK decodes is
// always present with its type (the SDK decodes strictly).
type (
	// StatusResponse is GET /passkeys/status's answer.
	StatusResponse struct {
		Status string `json:"status"`
	}

	// RegistrationResponse is POST /passkeys/begin-registration's answer.
	RegistrationResponse struct {
		Options   RegistrationOptions `json:"options"`
		SessionID string              `json:"sessionId"`
	}
	// RegistrationOptions wraps the creation options.
	RegistrationOptions struct {
		PublicKey CreationOptions `json:"publicKey"`
	}
	// CreationOptions are WebAuthn creation options in the SDK's form:
	// challenge base64url, user.id a plain string whose UTF-8 bytes are the
	// user handle, timeout in milliseconds. There is no excludeCredentials:
	// a client whose passkey was registered without its key (status
	// "registered") registers again, and an authenticator that honours the
	// list would refuse that.
	CreationOptions struct {
		RP                     RPEntity               `json:"rp"`
		User                   UserEntity             `json:"user"`
		Challenge              string                 `json:"challenge"`
		PubKeyCredParams       []CredentialParameter  `json:"pubKeyCredParams"`
		Timeout                int64                  `json:"timeout"`
		AuthenticatorSelection AuthenticatorSelection `json:"authenticatorSelection"`
		Attestation            string                 `json:"attestation"`
	}
	// RPEntity is the relying party.
	RPEntity struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	}
	// UserEntity is the user: ID is the plain user handle string.
	UserEntity struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
		ID          string `json:"id"`
	}
	// CredentialParameter is one accepted algorithm.
	CredentialParameter struct {
		Type string `json:"type"`
		Alg  int64  `json:"alg"`
	}
	// AuthenticatorSelection are the authenticator requirements.
	AuthenticatorSelection struct {
		AuthenticatorAttachment string `json:"authenticatorAttachment,omitempty"`
		RequireResidentKey      bool   `json:"requireResidentKey"`
		ResidentKey             string `json:"residentKey"`
		UserVerification        string `json:"userVerification"`
	}
	// CredentialDescriptor names a credential (id base64url).
	CredentialDescriptor struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}

	// LoginResponse is POST /passkeys/begin-login's answer.
	LoginResponse struct {
		Options   LoginOptions `json:"options"`
		SessionID string       `json:"sessionId"`
	}
	// LoginOptions wraps the request options.
	LoginOptions struct {
		PublicKey RequestOptions `json:"publicKey"`
	}
	// RequestOptions are WebAuthn request options in the SDK's form.
	RequestOptions struct {
		Challenge        string                 `json:"challenge"`
		Timeout          int64                  `json:"timeout"`
		RPID             string                 `json:"rpId"`
		AllowCredentials []CredentialDescriptor `json:"allowCredentials"`
		UserVerification string                 `json:"userVerification"`
	}
)

// Session kinds bound into a sessionId.
const (
	sessionRegistration   = "registration"
	sessionAuthentication = "authentication"
)

// sessionID binds a ceremony id to the client that began it and the
// ceremony's kind: <ceremony id>.<tag>, tag = HMAC-SHA-256 under the
// "portal session id" root subkey, truncated to 16 bytes. Finishing with
// another client's sessionId is refused before the ceremony is touched (so
// a stranger cannot use it up either). Every node of a cluster holds the
// same root key, so any node checks a sessionId any other issued; it is
// single use because its ceremony is (taken once in the whole cluster).
func (a *Adapter) sessionID(kind string, owner enclave.Owner, ceremonyID string) string {
	return ceremonyID + "." + base64.RawURLEncoding.EncodeToString(a.sessionTag(kind, owner, ceremonyID))
}

func (a *Adapter) sessionTag(kind string, owner enclave.Owner, ceremonyID string) []byte {
	m := hmac.New(sha256.New, a.sessionKey)
	m.Write([]byte("keywarden portal session v1\x00" + kind + "\x00" + string(owner) + "\x00" + ceremonyID))
	return m.Sum(nil)[:16]
}

// ceremonyOf checks a sessionId against its client and kind and returns
// the ceremony id.
func (a *Adapter) ceremonyOf(kind string, owner enclave.Owner, sessionID string) (string, error) {
	i := strings.LastIndexByte(sessionID, '.')
	if i <= 0 {
		return "", ErrSessionInvalid
	}
	tag, err := base64.RawURLEncoding.DecodeString(sessionID[i+1:])
	if err != nil || !hmac.Equal(tag, a.sessionTag(kind, owner, sessionID[:i])) {
		return "", ErrSessionInvalid
	}
	return sessionID[:i], nil
}

// subject is the passkey subject of a client: its records belong to
// "portal:<clientId>"; the user handle is the client id, or a digest of
// it when it is longer than a user handle may be.
func subject(client Client) passkey.Subject {
	uid := client.ID
	if passkey.ValidUserID(uid) != nil {
		h := sha256.Sum256([]byte(client.ID))
		uid = "p-" + base64.RawURLEncoding.EncodeToString(h[:])[:40]
	}
	return passkey.Subject{Owner: ClientOwner(client.ID), UserID: uid}
}

// passkeyCaller checks the service, the credential's shape and the body,
// then resolves the client and checks the relying party.
func (a *Adapter) passkeyCaller(c echo.Context, body validator, limit int64, rp func() string) (Client, error) {
	if a.pk == nil {
		return Client{}, ErrPasskeysOff
	}
	cred, err := credential(c)
	if err != nil {
		return Client{}, err
	}
	if body != nil {
		if err := bind(c, body, limit); err != nil {
			return Client{}, err
		}
		if !a.pk.HasRelyingParty(rp()) {
			return Client{}, ErrRelyingParty
		}
	}
	return a.resolve(c, cred)
}

// PasskeyStatus is GET /passkeys/status.
func (a *Adapter) PasskeyStatus(c echo.Context) error {
	client, err := a.passkeyCaller(c, nil, 0, nil)
	if err != nil {
		return err
	}
	st, err := a.pk.Status(c.Request().Context(), ClientOwner(client.ID))
	if err != nil {
		return err
	}
	// A key without an active passkey (all revoked) still reports
	// "registered with credential": registering over a stored key is
	// refused (409), and the operator restores access (decisions/05).
	status := StatusNotRegistered
	switch {
	case st.HasKey:
		status = StatusRegisteredWithKey
	case st.Passkeys > 0:
		status = StatusRegistered
	}
	noStore(c)
	return c.JSON(http.StatusOK, StatusResponse{Status: status})
}

// beginRequest is the body of begin-registration and begin-login.
type beginRequest struct {
	RelyingParty string `json:"relyingParty"`
}

func (r *beginRequest) Validate() error {
	if r.RelyingParty == "" || len(r.RelyingParty) > 253 {
		return ErrRelyingParty
	}
	return nil
}

func timeoutMillis(ms int, expires, now time.Time) int64 {
	if ms > 0 {
		return int64(ms)
	}
	if d := expires.Sub(now); d > 0 {
		return d.Milliseconds()
	}
	return passkey.DefaultCeremonyTTL.Milliseconds()
}

func wireDescriptors(ds []protocol.CredentialDescriptor) []CredentialDescriptor {
	out := make([]CredentialDescriptor, 0, len(ds))
	for _, d := range ds {
		out = append(out, CredentialDescriptor{Type: string(d.Type), ID: base64.RawURLEncoding.EncodeToString(d.CredentialID)})
	}
	return out
}

// BeginRegistration is POST /passkeys/begin-registration.
func (a *Adapter) BeginRegistration(c echo.Context) error {
	var req beginRequest
	client, err := a.passkeyCaller(c, &req, maxSmallBody, func() string { return req.RelyingParty })
	if err != nil {
		return err
	}
	subj := subject(client)
	out, err := a.pk.BeginRegistration(c.Request().Context(), passkey.RegistrationRequest{
		Subject: subj, RPID: req.RelyingParty, DisplayName: a.opts.DisplayName, ClientAddr: c.RealIP(),
		// The SDK's finish always carries a new key, and a claim of an
		// imported key never replaces it: refuse now, not after the user
		// made a passkey.
		KeyAtFinish: true,
	})
	if err != nil {
		return err
	}
	o := out.Options
	pk := CreationOptions{
		RP:               RPEntity{Name: o.RelyingParty.Name, ID: o.RelyingParty.ID},
		User:             UserEntity{Name: subj.UserID, DisplayName: a.opts.DisplayName, ID: subj.UserID},
		Challenge:        base64.RawURLEncoding.EncodeToString(o.Challenge),
		PubKeyCredParams: make([]CredentialParameter, 0, len(o.Parameters)),
		Timeout:          timeoutMillis(o.Timeout, out.Expires, a.now()),
		AuthenticatorSelection: AuthenticatorSelection{
			AuthenticatorAttachment: string(o.AuthenticatorSelection.AuthenticatorAttachment),
			RequireResidentKey:      o.AuthenticatorSelection.RequireResidentKey != nil && *o.AuthenticatorSelection.RequireResidentKey,
			ResidentKey:             string(o.AuthenticatorSelection.ResidentKey),
			UserVerification:        string(o.AuthenticatorSelection.UserVerification),
		},
		Attestation: string(o.Attestation),
	}
	if pk.RP.Name == "" {
		pk.RP.Name = pk.RP.ID
	}
	if pk.Attestation == "" {
		pk.Attestation = string(protocol.PreferNoAttestation)
	}
	if pk.AuthenticatorSelection.ResidentKey == "" {
		pk.AuthenticatorSelection.ResidentKey = string(protocol.ResidentKeyRequirementRequired)
	}
	if pk.AuthenticatorSelection.UserVerification == "" {
		pk.AuthenticatorSelection.UserVerification = string(protocol.VerificationRequired)
	}
	for _, p := range o.Parameters {
		pk.PubKeyCredParams = append(pk.PubKeyCredParams, CredentialParameter{Type: string(p.Type), Alg: int64(p.Algorithm)})
	}
	noStore(c)
	return c.JSON(http.StatusOK, RegistrationResponse{
		Options:   RegistrationOptions{PublicKey: pk},
		SessionID: a.sessionID(sessionRegistration, subj.Owner, out.CeremonyID),
	})
}

// BeginLogin is POST /passkeys/begin-login.
func (a *Adapter) BeginLogin(c echo.Context) error {
	var req beginRequest
	client, err := a.passkeyCaller(c, &req, maxSmallBody, func() string { return req.RelyingParty })
	if err != nil {
		return err
	}
	subj := subject(client)
	out, err := a.pk.BeginAuthentication(c.Request().Context(), passkey.AuthenticationRequest{
		Subject: &subj, OwnerPrefix: OwnerPrefix, RPID: req.RelyingParty, ClientAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	o := out.Options
	pk := RequestOptions{
		Challenge:        base64.RawURLEncoding.EncodeToString(o.Challenge),
		Timeout:          timeoutMillis(o.Timeout, out.Expires, a.now()),
		RPID:             o.RelyingPartyID,
		AllowCredentials: wireDescriptors(o.AllowedCredentials),
		UserVerification: string(o.UserVerification),
	}
	if pk.RPID == "" {
		pk.RPID = req.RelyingParty
	}
	if pk.UserVerification == "" {
		pk.UserVerification = string(protocol.VerificationRequired)
	}
	noStore(c)
	return c.JSON(http.StatusOK, LoginResponse{
		Options:   LoginOptions{PublicKey: pk},
		SessionID: a.sessionID(sessionAuthentication, subj.Owner, out.CeremonyID),
	})
}

// finishRequest is the body of finish-registration and finish-login/*:
// Credential is attestation or assertion, the credential JSON as a string
// (an object is accepted too).
type finishRequest struct {
	Attestation   json.RawMessage `json:"attestation"`
	Assertion     json.RawMessage `json:"assertion"`
	SessionID     string          `json:"sessionId"`
	EncryptionKey *string         `json:"encryptionKey"`
	RelyingParty  string          `json:"relyingParty"`

	route string // which finish: decides what is required
}

const (
	routeRegistration = "registration"
	routeLoginRead    = "login/read"
	routeLoginWrite   = "login/write"
)

func (r *finishRequest) credential() json.RawMessage {
	if r.route == routeRegistration {
		return r.Attestation
	}
	return r.Assertion
}

func (r *finishRequest) Validate() error {
	if r.RelyingParty == "" || len(r.RelyingParty) > 253 {
		return ErrRelyingParty
	}
	if r.SessionID == "" || len(r.SessionID) > 256 {
		return ErrSessionInvalid
	}
	cred := bytes.TrimSpace(r.credential())
	if len(cred) == 0 || bytes.Equal(cred, []byte("null")) || (cred[0] != '"' && cred[0] != '{') {
		return ErrCredentialRequired
	}
	switch r.route {
	case routeRegistration, routeLoginWrite:
		if r.EncryptionKey == nil {
			return ErrInvalidKey
		}
		return checkKey(*r.EncryptionKey)
	}
	return nil
}

func (a *Adapter) finishCaller(c echo.Context, req *finishRequest, kind string) (Client, string, error) {
	client, err := a.passkeyCaller(c, req, maxFinishBody, func() string { return req.RelyingParty })
	if err != nil {
		return Client{}, "", err
	}
	ceremony, err := a.ceremonyOf(kind, ClientOwner(client.ID), req.SessionID)
	if err != nil {
		return Client{}, "", err
	}
	return client, ceremony, nil
}

// FinishRegistration is POST /passkeys/finish-registration.
func (a *Adapter) FinishRegistration(c echo.Context) error {
	req := finishRequest{route: routeRegistration}
	client, ceremony, err := a.finishCaller(c, &req, sessionRegistration)
	if err != nil {
		return err
	}
	key := []byte(*req.EncryptionKey)
	defer clear(key)
	// The key is stored only if none is (NoOverwrite): a registration never
	// replaces a key; finish-login/write does, with an assertion.
	if _, err := a.pk.FinishRegistration(c.Request().Context(), passkey.FinishRegistrationRequest{
		CeremonyID: ceremony, RPID: req.RelyingParty, Credential: req.Attestation,
		Key: key, KeyFormat: enclave.FormatText, ClientID: client.ID, ClientAddr: c.RealIP(),
	}); err != nil {
		return err
	}
	return ok(c, http.StatusOK)
}

// FinishLoginRead is POST /passkeys/finish-login/read.
func (a *Adapter) FinishLoginRead(c echo.Context) error {
	req := finishRequest{route: routeLoginRead}
	_, ceremony, err := a.finishCaller(c, &req, sessionAuthentication)
	if err != nil {
		return err
	}
	out, err := a.pk.FinishAuthentication(c.Request().Context(), passkey.FinishAuthenticationRequest{
		CeremonyID: ceremony, RPID: req.RelyingParty, Credential: req.Assertion, ClientAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	defer out.Key.Wipe()
	if out.KeyFormat != enclave.FormatText || out.Key.Len() == 0 {
		return ErrKeyFormat
	}
	noStore(c)
	return c.JSON(http.StatusOK, EncryptKeyResponse{EncryptionKey: string(out.Key.Reveal())})
}

// FinishLoginWrite is POST /passkeys/finish-login/write.
func (a *Adapter) FinishLoginWrite(c echo.Context) error {
	req := finishRequest{route: routeLoginWrite}
	client, ceremony, err := a.finishCaller(c, &req, sessionAuthentication)
	if err != nil {
		return err
	}
	key := []byte(*req.EncryptionKey)
	defer clear(key)
	out, err := a.pk.FinishAuthentication(c.Request().Context(), passkey.FinishAuthenticationRequest{
		CeremonyID: ceremony, RPID: req.RelyingParty, Credential: req.Assertion,
		ReplaceKey: key, ReplaceKeyFormat: enclave.FormatText, ReplaceClientID: client.ID, ClientAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	if !out.Replaced {
		return apierr.ErrInternal
	}
	return ok(c, http.StatusOK)
}
