package portal

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/firebase"
)

// FirebaseTokenHeader carries the Firebase ID token on the TBS routes.
const FirebaseTokenHeader = "X-Firebase-Token"

// encryptKeyRequest is PUT /v1/backup/encrypt-key's body.
type encryptKeyRequest struct {
	EncryptionKey *string `json:"encryptionKey"`
}

func (r *encryptKeyRequest) Validate() error {
	if r.EncryptionKey == nil {
		return ErrInvalidKey
	}
	return checkKey(*r.EncryptionKey)
}

// checkKey checks the SDK's encryption key: opaque text of 1 to
// MaxKeyBytes bytes of UTF-8, kept byte for byte.
func checkKey(k string) error {
	if k == "" || len(k) > MaxKeyBytes || !utf8.ValidString(k) {
		return ErrInvalidKey
	}
	return nil
}

// EncryptKeyResponse is GET /v1/backup/encrypt-key's answer.
type EncryptKeyResponse struct {
	EncryptionKey string `json:"encryptionKey"`
}

// firebaseCaller checks, in order, the credential's shape, the Firebase token and
// (only then, over the network if not cached) the Portal client.
func (a *Adapter) firebaseCaller(c echo.Context, body validator) (*firebase.Identity, Client, error) {
	cred, err := credential(c)
	if err != nil {
		return nil, Client{}, err
	}
	id, err := a.srv.VerifyFirebase(c, FirebaseTokenHeader)
	if err != nil {
		return nil, Client{}, err
	}
	if body != nil {
		if err := bind(c, body, maxSmallBody); err != nil {
			return nil, Client{}, err
		}
	}
	client, err := a.resolve(c, cred)
	if err != nil {
		return nil, Client{}, err
	}
	// The audit lines name the client as actor and the Firebase user as
	// owner.
	return id, client, nil
}

// checkClient applies the custody's client isolation rule (on unless
// portal.client_mismatch is allow) to the stored key early, auditing a
// refusal. A key stored without a client id (the native API) is open to
// any client. The custody checks the rule again on the record it acts on.
func (a *Adapter) checkClient(c echo.Context, owner enclave.Owner, info *enclave.KeyInfo, client Client) error {
	if err := a.srv.Custody().CheckAccess(owner, info, enclave.Access{ClientID: client.ID}); err != nil {
		a.srv.Audit().Refusal(c.Request().Context(), a.srv.Event(c, audit.ActionRefusal, string(owner), server.MethodFirebase, ErrClientMismatch.Code))
		return err
	}
	return nil
}

// info describes the stored Firebase key, nil when there is none.
func (a *Adapter) info(c echo.Context, owner enclave.Owner) (*enclave.KeyInfo, error) {
	info, err := a.srv.Custody().Info(c.Request().Context(), owner, server.MethodFirebase)
	if errors.Is(err, apierr.ErrNotFound) {
		return nil, nil
	}
	return info, err
}

// tbsPut stores the SDK's encryption key for the Firebase user, keyed
// exactly as the native Firebase API keys it, as text, with the client id.
func (a *Adapter) tbsPut(c echo.Context) error {
	var req encryptKeyRequest
	id, client, err := a.firebaseCaller(c, &req)
	if err != nil {
		return err
	}
	owner := enclave.Owner(id.Owner())
	info, err := a.info(c, owner)
	if err != nil {
		return err
	}
	if err := a.checkClient(c, owner, info, client); err != nil {
		return err
	}
	if max := a.opts.OverwriteMaxAuthAge; max > 0 && info != nil && a.now().Sub(id.AuthTime) > max {
		a.srv.Audit().Refusal(c.Request().Context(), a.srv.Event(c, audit.ActionRefusal, string(owner), server.MethodFirebase, "key_exists"))
		return ErrRecentSignIn
	}
	key := []byte(*req.EncryptionKey)
	defer clear(key)
	replaced, err := a.srv.StoreKey(c, owner, server.MethodFirebase, key,
		enclave.PutOptions{Format: enclave.FormatText, ClientID: client.ID, SameClientOnly: !a.opts.AllowClientMismatch})
	if err != nil {
		return err
	}
	if replaced {
		return ok(c, http.StatusOK)
	}
	return ok(c, http.StatusCreated)
}

// tbsGet releases the Firebase user's key as the string that was stored.
func (a *Adapter) tbsGet(c echo.Context) error {
	id, client, err := a.firebaseCaller(c, nil)
	if err != nil {
		return err
	}
	owner := enclave.Owner(id.Owner())
	info, err := a.info(c, owner)
	if err != nil {
		return err
	}
	if info == nil {
		return apierr.ErrNotFound.WithMessage("no key is stored for this user")
	}
	if err := a.checkClient(c, owner, info, client); err != nil {
		return err
	}
	if info.Format != enclave.FormatText {
		return ErrKeyFormat
	}
	if a.beforeRelease != nil {
		a.beforeRelease()
	}
	// The record may have changed since the look above: the custody applies
	// the client rule, and the format is checked, on the very record
	// opened, before the release is audited.
	key, _, err := a.srv.ReleaseKeyChecked(c, owner, server.MethodFirebase, enclave.Access{ClientID: client.ID}, func(rinfo *enclave.KeyInfo) error {
		if rinfo.Format != enclave.FormatText {
			return ErrKeyFormat
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer key.Wipe()
	noStore(c)
	return c.JSON(http.StatusOK, EncryptKeyResponse{EncryptionKey: string(key.Reveal())})
}
