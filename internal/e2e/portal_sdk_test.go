package e2e

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/keywarden/keywarden/internal/softauthn"
)

// The SDK's response types, as PortalSwift declares them (Codable: every
// non-optional member must be present with its type). The e2e test
// decodes each answer into these with unknown members refused, and checks
// the required members with portalMembers as well.
type (
	sdkEncryptKey struct {
		EncryptionKey string `json:"encryptionKey"`
	}
	sdkStatus struct {
		Status string `json:"status"`
	}
	sdkRegistrationOptions struct {
		Options struct {
			PublicKey struct {
				RP struct {
					Name string `json:"name"`
					ID   string `json:"id"`
				} `json:"rp"`
				User struct {
					Name        string `json:"name"`
					DisplayName string `json:"displayName"`
					ID          string `json:"id"`
				} `json:"user"`
				Challenge        string `json:"challenge"`
				PubKeyCredParams []struct {
					Type *string `json:"type"`
					Alg  *int    `json:"alg"`
				} `json:"pubKeyCredParams"`
				Timeout                int `json:"timeout"`
				AuthenticatorSelection *struct {
					AuthenticatorAttachment *string `json:"authenticatorAttachment"`
					RequireResidentKey      *bool   `json:"requireResidentKey"`
					ResidentKey             *string `json:"residentKey"`
					UserVerification        *string `json:"userVerification"`
				} `json:"authenticatorSelection"`
				Attestation *string `json:"attestation"`
			} `json:"publicKey"`
		} `json:"options"`
		SessionID string `json:"sessionId"`
	}
	sdkAuthenticationOptions struct {
		Options struct {
			PublicKey struct {
				Challenge        string `json:"challenge"`
				Timeout          int    `json:"timeout"`
				RPID             string `json:"rpId"`
				AllowCredentials []struct {
					Type string  `json:"type"`
					ID   *string `json:"id"`
				} `json:"allowCredentials"`
				UserVerification string `json:"userVerification"`
			} `json:"publicKey"`
		} `json:"options"`
		SessionID string `json:"sessionId"`
	}
	sdkBackupShares struct {
		BackupShares []string `json:"backupShares"`
	}
)

var (
	sdkRegistrationMembers = map[string]string{
		"options":                                   "object",
		"options.publicKey":                         "object",
		"options.publicKey.rp.name":                 "string",
		"options.publicKey.rp.id":                   "string",
		"options.publicKey.user.name":               "string",
		"options.publicKey.user.displayName":        "string",
		"options.publicKey.user.id":                 "string",
		"options.publicKey.challenge":               "string",
		"options.publicKey.pubKeyCredParams":        "array",
		"options.publicKey.pubKeyCredParams[].type": "string",
		"options.publicKey.pubKeyCredParams[].alg":  "int",
		"options.publicKey.timeout":                 "int",
		"options.publicKey.authenticatorSelection":  "object",
		"options.publicKey.attestation":             "string",
		"sessionId":                                 "string",
	}
	sdkAuthenticationMembers = map[string]string{
		"options.publicKey.challenge":               "string",
		"options.publicKey.timeout":                 "int",
		"options.publicKey.rpId":                    "string",
		"options.publicKey.allowCredentials":        "array",
		"options.publicKey.allowCredentials[].type": "string",
		"options.publicKey.allowCredentials[].id":   "string",
		"options.publicKey.userVerification":        "string",
		"sessionId":                                 "string",
	}
)

// iosCredential rebuilds a credential as PortalSwift's PasskeyAuth builds
// it from the platform's answer (rawId, id, clientExtensionResults, type,
// and the response members iOS gives, userHandle as the plain UTF-8
// string) and returns it JSON-encoded: the string the SDK sends.
func iosCredential(t *testing.T, raw []byte, members ...string) string {
	t.Helper()
	s, err := iosCredentialOf(raw, members...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// iosCredentialOf is iosCredential for code that runs outside the test's
// goroutine (the cluster's load): it returns the error.
func iosCredentialOf(raw []byte, members ...string) (string, error) {
	var c struct {
		ID       string                     `json:"id"`
		RawID    string                     `json:"rawId"`
		Response map[string]json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", err
	}
	resp := map[string]json.RawMessage{}
	for _, m := range members {
		if v, ok := c.Response[m]; ok {
			resp[m] = v
		}
	}
	b, err := json.Marshal(map[string]any{"rawId": c.RawID, "id": c.ID, "clientExtensionResults": map[string]any{},
		"type": "public-key", "response": resp})
	return string(b), err
}

// portalSDK drives one app's PasskeyStorage against a node.
type portalSDK struct {
	n      *portalNode
	cred   string
	rp     string
	origin string
	auth   *softauthn.Authenticator
}

func (s *portalSDK) status(t *testing.T) string {
	t.Helper()
	r := s.n.sdk(t, http.MethodGet, "/passkeys/status", s.cred, nil)
	portalWant(t, r, http.StatusOK, "")
	portalMembers(t, r.body, map[string]string{"status": "string"})
	var st sdkStatus
	portalStrict(t, r.body, &st)
	return st.Status
}

// beginRegistration returns the options member (what the SDK hands to
// the platform) and the sessionId, after checking the answer's shape.
func (s *portalSDK) beginRegistration(t *testing.T) ([]byte, string) {
	t.Helper()
	r := s.n.sdk(t, http.MethodPost, "/passkeys/begin-registration", s.cred, map[string]string{"relyingParty": s.rp})
	portalWant(t, r, http.StatusOK, "")
	portalMembers(t, r.body, sdkRegistrationMembers)
	var o sdkRegistrationOptions
	portalStrict(t, r.body, &o)
	if o.Options.PublicKey.RP.ID != s.rp || o.Options.PublicKey.Timeout <= 0 {
		t.Fatalf("creation options: %s", r.body)
	}
	var raw struct {
		Options json.RawMessage `json:"options"`
	}
	_ = json.Unmarshal(r.body, &raw)
	return raw.Options, o.SessionID
}

func (s *portalSDK) beginLogin(t *testing.T) ([]byte, string) {
	t.Helper()
	r := s.n.sdk(t, http.MethodPost, "/passkeys/begin-login", s.cred, map[string]string{"relyingParty": s.rp})
	portalWant(t, r, http.StatusOK, "")
	portalMembers(t, r.body, sdkAuthenticationMembers)
	var o sdkAuthenticationOptions
	portalStrict(t, r.body, &o)
	if o.Options.PublicKey.RPID != s.rp || len(o.Options.PublicKey.AllowCredentials) == 0 {
		t.Fatalf("request options: %s", r.body)
	}
	var raw struct {
		Options json.RawMessage `json:"options"`
	}
	_ = json.Unmarshal(r.body, &raw)
	return raw.Options, o.SessionID
}

// create makes the attestation string as iOS would.
func (s *portalSDK) create(t *testing.T, opts []byte, o softauthn.CreateOptions) string {
	t.Helper()
	o.UserIDPlain = true
	raw, _, err := s.auth.CreateWith(opts, s.origin, o)
	if err != nil {
		t.Fatal(err)
	}
	return iosCredential(t, raw, "attestationObject", "clientDataJSON")
}

// assert makes the assertion string as iOS would (plain userHandle unless
// o says otherwise).
func (s *portalSDK) assert(t *testing.T, opts []byte, origin string, o softauthn.GetOptions) string {
	t.Helper()
	if o.UserHandle == 0 {
		o.UserHandle = softauthn.UserHandlePlain
	}
	raw, err := s.auth.GetWith(opts, origin, o)
	if err != nil {
		t.Fatal(err)
	}
	return iosCredential(t, raw, "clientDataJSON", "authenticatorData", "signature", "userHandle")
}

func (s *portalSDK) finishRegistration(t *testing.T, sid, attestation, key string) portalReply {
	t.Helper()
	return s.n.sdk(t, http.MethodPost, "/passkeys/finish-registration", s.cred,
		map[string]string{"attestation": attestation, "sessionId": sid, "encryptionKey": key, "relyingParty": s.rp})
}

func (s *portalSDK) read(t *testing.T, sid, assertion string) portalReply {
	t.Helper()
	return s.n.sdk(t, http.MethodPost, "/passkeys/finish-login/read", s.cred,
		map[string]string{"assertion": assertion, "sessionId": sid, "relyingParty": s.rp})
}

func (s *portalSDK) write(t *testing.T, sid, assertion, key string) portalReply {
	t.Helper()
	return s.n.sdk(t, http.MethodPost, "/passkeys/finish-login/write", s.cred,
		map[string]string{"encryptionKey": key, "assertion": assertion, "sessionId": sid, "relyingParty": s.rp})
}

// key reads the encryptionKey of a finish-login/read or TBS GET answer.
func portalKey(t *testing.T, r portalReply) string {
	t.Helper()
	portalWant(t, r, http.StatusOK, "")
	portalMembers(t, r.body, map[string]string{"encryptionKey": "string"})
	var k sdkEncryptKey
	portalStrict(t, r.body, &k)
	return k.EncryptionKey
}
