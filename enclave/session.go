package enclave

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
)

// Session token errors. All are 401.
var (
	ErrSessionInvalid = apierr.New(401, "session_invalid", "the user session token is malformed or not signed by this appliance")
	ErrSessionExpired = apierr.New(401, "session_expired", "the user session token has expired; mint a new one through the admin API")
)

// SessionTokens mints and checks short-lived user session tokens: the
// customer's backend vouches for a user id through the admin API and hands
// the token to the app (for passkey registration).
//
// Format: "kws1." ‖ base64url(JSON claims) ‖ "." ‖ base64url(HMAC-SHA256(subkey "session-token", "kws1." ‖ claims)).
type SessionTokens struct {
	key secret.Bytes
	now func() time.Time
}

// SessionClaims are what a token vouches for.
type SessionClaims struct {
	UserID  string `json:"sub"`
	Expires int64  `json:"exp"`
	ID      string `json:"jti"`
}

// SessionTokens returns the token service keyed by a root subkey.
func (r *Root) SessionTokens(now func() time.Time) *SessionTokens {
	if now == nil {
		now = time.Now
	}
	return &SessionTokens{key: r.Subkey(SubkeySessionToken), now: now}
}

const sessionPrefix = "kws1."

// Mint makes a token for userID valid for ttl.
func (s *SessionTokens) Mint(userID string, ttl time.Duration) (token string, expires time.Time) {
	var id [12]byte
	_, _ = rand.Read(id[:])
	expires = s.now().Add(ttl).UTC().Truncate(time.Second)
	c, _ := json.Marshal(SessionClaims{UserID: userID, Expires: expires.Unix(), ID: base64.RawURLEncoding.EncodeToString(id[:])})
	body := sessionPrefix + base64.RawURLEncoding.EncodeToString(c)
	return body + "." + base64.RawURLEncoding.EncodeToString(s.mac(body)), expires
}

func (s *SessionTokens) mac(body string) []byte {
	m := hmac.New(sha256.New, s.key.Reveal())
	m.Write([]byte(body))
	return m.Sum(nil)
}

// Verify checks the token's signature and expiry and returns its claims.
func (s *SessionTokens) Verify(token string) (*SessionClaims, error) {
	if len(token) > 1024 || !strings.HasPrefix(token, sessionPrefix) {
		return nil, ErrSessionInvalid
	}
	i := strings.LastIndexByte(token, '.')
	if i <= len(sessionPrefix) {
		return nil, ErrSessionInvalid
	}
	body, sig := token[:i], token[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(body)) {
		return nil, ErrSessionInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(body[len(sessionPrefix):])
	if err != nil {
		return nil, ErrSessionInvalid
	}
	var c SessionClaims
	if err := json.Unmarshal(raw, &c); err != nil || c.UserID == "" {
		return nil, ErrSessionInvalid
	}
	if !s.now().Before(time.Unix(c.Expires, 0)) {
		return nil, ErrSessionExpired
	}
	return &c, nil
}
