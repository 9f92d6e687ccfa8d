package portal

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
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
	id, err := a.fb.Verify(c, FirebaseTokenHeader)
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

// TBSPut stores the SDK's encryption key for the Firebase user, keyed
// exactly as the native Firebase API keys it, as text, with the client id.
// The keys service applies the client isolation rule and the sign-in age
// rule (the same one as the native PUT), audits and counts.
func (a *Adapter) TBSPut(c echo.Context) error {
	var body encryptKeyRequest
	id, client, err := a.firebaseCaller(c, &body)
	if err != nil {
		return err
	}
	key := []byte(*body.EncryptionKey)
	defer clear(key)
	req := httpx.KeysRequest(c)
	req.SignIn = &keys.SignIn{At: id.AuthTime, MaxAge: a.opts.OverwriteMaxAuthAge}
	replaced, err := a.keys.Store(c.Request().Context(), req, enclave.Owner(id.Owner()), firebase.Method, key,
		enclave.PutOptions{Format: enclave.FormatText, ClientID: client.ID, SameClientOnly: !a.opts.AllowClientMismatch})
	if err != nil {
		return err
	}
	if replaced {
		return ok(c, http.StatusOK)
	}
	return ok(c, http.StatusCreated)
}

// TBSGet releases the Firebase user's key as the string that was stored.
// One read: the custody applies the client rule, and the format is
// checked, on the very record opened, before the release is audited.
func (a *Adapter) TBSGet(c echo.Context) error {
	id, client, err := a.firebaseCaller(c, nil)
	if err != nil {
		return err
	}
	if a.beforeRelease != nil {
		a.beforeRelease()
	}
	key, _, err := a.keys.Release(c.Request().Context(), httpx.KeysRequest(c), enclave.Owner(id.Owner()), firebase.Method,
		enclave.Access{ClientID: client.ID}, func(info *enclave.KeyInfo) error {
			if info.Format != enclave.FormatText {
				return ErrKeyFormat
			}
			return nil
		})
	if errors.Is(err, apierr.ErrNotFound) {
		return apierr.ErrNotFound.WithMessage("no key is stored for this user")
	}
	if err != nil {
		return err
	}
	defer key.Wipe()
	noStore(c)
	return c.JSON(http.StatusOK, EncryptKeyResponse{EncryptionKey: string(key.Reveal())})
}

// EventsOwner authenticates GET /v1/me/events as TBSGet does (the client's
// credential in Authorization, the user's Firebase ID token in
// X-Firebase-Token) and returns the Firebase user's owner id: the list is
// of that user's records, as the token alone would give on the native route.
func (a *Adapter) EventsOwner(c echo.Context) (string, error) {
	id, _, err := a.firebaseCaller(c, nil)
	if err != nil {
		return "", err
	}
	return id.Owner(), nil
}
