// Package softauthn is a software WebAuthn authenticator for tests. It
// makes real credentials (ES256 on P-256, RS256, Ed25519) and real
// signatures, and speaks the standard WebAuthn JSON that
// navigator.credentials.create/get and the iOS and Android passkey APIs
// produce, so a relying party can be tested end to end without a browser.
//
// # Honest and hostile
//
// [Authenticator.Create] and [Authenticator.Get] behave like a platform
// authenticator (user present and verified, "none" attestation). Their
// option structs, [CreateOptions] and [GetOptions], whose zero values are
// honest, produce the hostile and quirky variants a relying party must
// handle: another origin or RP ID hash, flags set or cleared, a counter
// that goes backwards, the user handle as raw bytes, as a plain UTF-8
// string (iOS), empty (Safari) or absent (Android), a tampered signature,
// or a credential picked regardless of allowCredentials (as iOS lets the
// user do).
//
// Never use this package outside tests: its keys live in memory.
package softauthn

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Algorithm is a COSE algorithm identifier.
type Algorithm int64

// Supported algorithms.
const (
	ES256 Algorithm = -7
	EdDSA Algorithm = -8
	RS256 Algorithm = -257
)

func (a Algorithm) String() string {
	switch a {
	case ES256:
		return "ES256"
	case EdDSA:
		return "EdDSA"
	case RS256:
		return "RS256"
	}
	return fmt.Sprintf("COSE(%d)", int64(a))
}

// Authenticator data flags (WebAuthn §6.1).
const (
	FlagUP byte = 0x01 // user present
	FlagUV byte = 0x04 // user verified
	FlagBE byte = 0x08 // backup eligible
	FlagBS byte = 0x10 // backup state
	FlagAT byte = 0x40 // attested credential data included
	FlagED byte = 0x80 // extension data included
)

// Errors.
var (
	ErrNoCredential   = errors.New("softauthn: no credential for this request")
	ErrBadOptions     = errors.New("softauthn: malformed options")
	ErrNoAlgorithm    = errors.New("softauthn: no supported algorithm in pubKeyCredParams")
	ErrExcluded       = errors.New("softauthn: a credential in excludeCredentials is on this authenticator")
	ErrBadAlgorithmID = errors.New("softauthn: unsupported algorithm")
)

// Authenticator holds credentials. It is safe for concurrent use.
type Authenticator struct {
	// AAGUID identifies the authenticator model in attested credential data.
	AAGUID [16]byte

	mu    sync.Mutex
	creds []*Credential
}

// New returns an authenticator with the given AAGUID and no credentials.
func New(aaguid [16]byte) *Authenticator { return &Authenticator{AAGUID: aaguid} }

// Credential is one key pair on the authenticator. Tests may change
// SignCount, CounterStep, BackupEligible and BackupState between calls
// (for example to flip BE as iCloud Keychain does) while no Get runs.
type Credential struct {
	ID         []byte
	RPID       string
	UserHandle []byte
	Algorithm  Algorithm
	Signer     crypto.Signer

	// SignCount is the last counter value used; CounterStep is added
	// before each assertion. A CounterStep of 0 keeps the counter at 0,
	// as synced passkeys do.
	SignCount   uint32
	CounterStep uint32

	BackupEligible bool
	BackupState    bool
}

// Credentials returns the authenticator's credentials, oldest first.
func (a *Authenticator) Credentials() []*Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*Credential(nil), a.creds...)
}

// Credential returns the credential with id, or nil.
func (a *Authenticator) Credential(id []byte) *Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.find(id)
}

func (a *Authenticator) find(id []byte) *Credential {
	for _, c := range a.creds {
		if bytes.Equal(c.ID, id) {
			return c
		}
	}
	return nil
}

// CreateOptions alter what Create produces. The zero value is an honest
// platform authenticator: ES256 (or the first supported algorithm the
// relying party lists), a 16-byte random credential id, UP and UV set, no
// backup flags, counter 0 that stays 0.
type CreateOptions struct {
	// Algorithm forces the key type; zero picks the first of the options'
	// pubKeyCredParams that is supported.
	Algorithm Algorithm
	// CredentialIDLength is the length of the random credential id; zero
	// means 16.
	CredentialIDLength int
	// UserIDPlain reads user.id as a plain string whose UTF-8 bytes are the
	// user handle (Portal's SDK), instead of base64url.
	UserIDPlain bool
	// SignCount is the initial counter; CounterStep is added per assertion
	// (0: the counter stays at SignCount, as synced passkeys report 0).
	SignCount   uint32
	CounterStep uint32
	// BackupEligible and BackupState set BE and BS.
	BackupEligible bool
	BackupState    bool
	// NoUserPresence and NoUserVerification clear UP and UV.
	NoUserPresence     bool
	NoUserVerification bool
	// SetFlags and ClearFlags are applied to the flags byte last.
	SetFlags, ClearFlags byte
	// RPIDHash replaces SHA-256(rp.id) in the authenticator data.
	RPIDHash []byte
	// ClientDataType replaces "webauthn.create".
	ClientDataType string
	// Challenge replaces the options' challenge in clientDataJSON.
	Challenge []byte
	// PRF reports prf.enabled = true when the options ask for prf.
	PRF bool
	// IgnoreExclude creates the credential even when excludeCredentials
	// names one of this authenticator's credentials.
	IgnoreExclude bool
	// DoNotStore makes a throw-away credential that the authenticator
	// does not keep (by default it keeps every credential it creates).
	DoNotStore bool
}

// creationOptions is what Create reads of PublicKeyCredentialCreationOptions.
type creationOptions struct {
	RP struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"rp"`
	User struct {
		ID          json.RawMessage `json:"id"`
		Name        string          `json:"name"`
		DisplayName string          `json:"displayName"`
	} `json:"user"`
	Challenge        string `json:"challenge"`
	PubKeyCredParams []struct {
		Type string    `json:"type"`
		Alg  Algorithm `json:"alg"`
	} `json:"pubKeyCredParams"`
	ExcludeCredentials []descriptor `json:"excludeCredentials"`
	Extensions         struct {
		PRF       json.RawMessage `json:"prf"`
		CredProps bool            `json:"credProps"`
	} `json:"extensions"`
}

type descriptor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// unwrap accepts options either bare or wrapped as {"publicKey": {...}}.
func unwrap(options []byte) []byte {
	var w struct {
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if json.Unmarshal(options, &w) == nil && len(w.PublicKey) > 0 && w.PublicKey[0] == '{' {
		return w.PublicKey
	}
	return options
}

func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: %q is not base64", ErrBadOptions, s)
}

var b64 = base64.RawURLEncoding

// Create makes a credential as navigator.credentials.create would, from
// creation options in the standard JSON (bare or under "publicKey"), and
// returns the registration response JSON.
func (a *Authenticator) Create(options []byte, origin string) ([]byte, *Credential, error) {
	return a.CreateWith(options, origin, CreateOptions{})
}

// CreateWith is Create with knobs.
func (a *Authenticator) CreateWith(options []byte, origin string, o CreateOptions) ([]byte, *Credential, error) {
	var opts creationOptions
	if err := json.Unmarshal(unwrap(options), &opts); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	challenge, err := decodeB64(opts.Challenge)
	if err != nil {
		return nil, nil, err
	}
	if o.Challenge != nil {
		challenge = o.Challenge
	}
	rpID := opts.RP.ID
	if rpID == "" {
		rpID = hostOf(origin)
	}
	var userID []byte
	var idStr string
	if err := json.Unmarshal(opts.User.ID, &idStr); err != nil {
		return nil, nil, fmt.Errorf("%w: user.id: %v", ErrBadOptions, err)
	}
	if o.UserIDPlain {
		userID = []byte(idStr)
	} else if userID, err = decodeB64(idStr); err != nil {
		return nil, nil, err
	}
	alg := o.Algorithm
	if alg == 0 {
		for _, p := range opts.PubKeyCredParams {
			if p.Type == "public-key" && (p.Alg == ES256 || p.Alg == RS256 || p.Alg == EdDSA) {
				alg = p.Alg
				break
			}
		}
		if alg == 0 {
			return nil, nil, ErrNoAlgorithm
		}
	}
	if !o.IgnoreExclude {
		a.mu.Lock()
		for _, d := range opts.ExcludeCredentials {
			id, err := decodeB64(d.ID)
			if err == nil && a.find(id) != nil {
				a.mu.Unlock()
				return nil, nil, ErrExcluded
			}
		}
		a.mu.Unlock()
	}

	signer, err := generate(alg)
	if err != nil {
		return nil, nil, err
	}
	n := o.CredentialIDLength
	if n == 0 {
		n = 16
	}
	cred := &Credential{
		ID: make([]byte, n), RPID: rpID, UserHandle: userID, Algorithm: alg, Signer: signer,
		SignCount: o.SignCount, CounterStep: o.CounterStep,
		BackupEligible: o.BackupEligible, BackupState: o.BackupState,
	}
	_, _ = rand.Read(cred.ID)

	coseKey, err := COSEKey(signer.Public())
	if err != nil {
		return nil, nil, err
	}
	flags := FlagUP | FlagUV | FlagAT
	if o.NoUserPresence {
		flags &^= FlagUP
	}
	if o.NoUserVerification {
		flags &^= FlagUV
	}
	if o.BackupEligible {
		flags |= FlagBE
	}
	if o.BackupState {
		flags |= FlagBS
	}
	flags = (flags | o.SetFlags) &^ o.ClearFlags

	rpHash := sha256.Sum256([]byte(rpID))
	authData := append([]byte(nil), rpHash[:]...)
	if o.RPIDHash != nil {
		authData = append([]byte(nil), o.RPIDHash...)
	}
	authData = append(authData, flags)
	authData = binary.BigEndian.AppendUint32(authData, o.SignCount)
	authData = append(authData, a.AAGUID[:]...)
	authData = binary.BigEndian.AppendUint16(authData, uint16(len(cred.ID)))
	authData = append(authData, cred.ID...)
	authData = append(authData, coseKey...)

	attObj, err := encMode.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, nil, err
	}
	ctype := "webauthn.create"
	if o.ClientDataType != "" {
		ctype = o.ClientDataType
	}
	cdj := clientDataJSON(ctype, challenge, origin)
	spki, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, nil, err
	}
	ext := map[string]any{}
	if len(opts.Extensions.PRF) > 0 && o.PRF {
		ext["prf"] = map[string]any{"enabled": true}
	}
	if opts.Extensions.CredProps {
		ext["credProps"] = map[string]any{"rk": true}
	}
	resp := map[string]any{
		"id":                      b64.EncodeToString(cred.ID),
		"rawId":                   b64.EncodeToString(cred.ID),
		"type":                    "public-key",
		"authenticatorAttachment": "platform",
		"response": map[string]any{
			"clientDataJSON":     b64.EncodeToString(cdj),
			"attestationObject":  b64.EncodeToString(attObj),
			"authenticatorData":  b64.EncodeToString(authData),
			"publicKey":          b64.EncodeToString(spki),
			"publicKeyAlgorithm": int64(alg),
			"transports":         []string{"internal", "hybrid"},
		},
		"clientExtensionResults": ext,
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, nil, err
	}
	if !o.DoNotStore {
		a.mu.Lock()
		a.creds = append(a.creds, cred)
		a.mu.Unlock()
	}
	return out, cred, nil
}

// UserHandleForm is how Get writes response.userHandle.
type UserHandleForm int

// User handle forms seen in the field.
const (
	UserHandleRaw    UserHandleForm = iota // base64url of the handle's bytes (browsers, Android)
	UserHandlePlain                        // the handle's bytes as a plain UTF-8 string (iOS via Portal's SDK)
	UserHandleEmpty                        // "" (Safari, sometimes)
	UserHandleAbsent                       // no userHandle member (Android, non-discoverable)
	UserHandleNull                         // null
	UserHandleCustom                       // GetOptions.UserHandleValue as given
)

// GetOptions alter what Get produces. The zero value is an honest
// platform authenticator: the first credential of allowCredentials it
// holds (or its newest credential for the RP when the list is empty), UP
// and UV set, the counter advanced by the credential's CounterStep, the
// user handle as base64url.
type GetOptions struct {
	// CredentialID picks this credential whatever allowCredentials says
	// (iOS lets the user pick any passkey of the RP).
	CredentialID []byte
	// UserHandle chooses the userHandle form; UserHandleValue is written
	// as is with UserHandleCustom.
	UserHandle      UserHandleForm
	UserHandleValue string
	// RPIDHash replaces SHA-256(rpId) in the authenticator data.
	RPIDHash []byte
	// NoUserPresence and NoUserVerification clear UP and UV.
	NoUserPresence     bool
	NoUserVerification bool
	// SetFlags and ClearFlags are applied to the flags byte last.
	SetFlags, ClearFlags byte
	// SignCount, when set, is written as the counter instead of advancing
	// the credential's counter.
	SignCount *uint32
	// TamperSignature flips a bit of the signature after signing.
	TamperSignature bool
	// ClientDataType replaces "webauthn.get".
	ClientDataType string
	// Challenge replaces the options' challenge in clientDataJSON.
	Challenge []byte
}

type requestOptions struct {
	Challenge        string       `json:"challenge"`
	RPID             string       `json:"rpId"`
	AllowCredentials []descriptor `json:"allowCredentials"`
}

// Get makes an assertion as navigator.credentials.get would, from request
// options in the standard JSON (bare or under "publicKey"), and returns
// the authentication response JSON.
func (a *Authenticator) Get(options []byte, origin string) ([]byte, error) {
	return a.GetWith(options, origin, GetOptions{})
}

// GetWith is Get with knobs.
func (a *Authenticator) GetWith(options []byte, origin string, o GetOptions) ([]byte, error) {
	var opts requestOptions
	if err := json.Unmarshal(unwrap(options), &opts); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	challenge, err := decodeB64(opts.Challenge)
	if err != nil {
		return nil, err
	}
	if o.Challenge != nil {
		challenge = o.Challenge
	}
	rpID := opts.RPID
	if rpID == "" {
		rpID = hostOf(origin)
	}

	a.mu.Lock()
	cred, err := a.pick(rpID, opts.AllowCredentials, o.CredentialID)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	count := cred.SignCount
	if o.SignCount != nil {
		count = *o.SignCount
	} else if cred.CounterStep > 0 {
		cred.SignCount += cred.CounterStep
		count = cred.SignCount
	}
	flags := FlagUP | FlagUV
	if cred.BackupEligible {
		flags |= FlagBE
	}
	if cred.BackupState {
		flags |= FlagBS
	}
	a.mu.Unlock()

	if o.NoUserPresence {
		flags &^= FlagUP
	}
	if o.NoUserVerification {
		flags &^= FlagUV
	}
	flags = (flags | o.SetFlags) &^ o.ClearFlags

	rpHash := sha256.Sum256([]byte(rpID))
	authData := append([]byte(nil), rpHash[:]...)
	if o.RPIDHash != nil {
		authData = append([]byte(nil), o.RPIDHash...)
	}
	authData = append(authData, flags)
	authData = binary.BigEndian.AppendUint32(authData, count)

	ctype := "webauthn.get"
	if o.ClientDataType != "" {
		ctype = o.ClientDataType
	}
	cdj := clientDataJSON(ctype, challenge, origin)
	sig, err := Sign(cred, authData, cdj)
	if err != nil {
		return nil, err
	}
	if o.TamperSignature {
		sig[len(sig)/2] ^= 0x01
	}

	resp := map[string]any{
		"clientDataJSON":    b64.EncodeToString(cdj),
		"authenticatorData": b64.EncodeToString(authData),
		"signature":         b64.EncodeToString(sig),
	}
	switch o.UserHandle {
	case UserHandleRaw:
		resp["userHandle"] = b64.EncodeToString(cred.UserHandle)
	case UserHandlePlain:
		resp["userHandle"] = string(cred.UserHandle)
	case UserHandleEmpty:
		resp["userHandle"] = ""
	case UserHandleNull:
		resp["userHandle"] = nil
	case UserHandleCustom:
		resp["userHandle"] = o.UserHandleValue
	case UserHandleAbsent:
	}
	return json.Marshal(map[string]any{
		"id":                      b64.EncodeToString(cred.ID),
		"rawId":                   b64.EncodeToString(cred.ID),
		"type":                    "public-key",
		"authenticatorAttachment": "platform",
		"response":                resp,
		"clientExtensionResults":  map[string]any{},
	})
}

// pick chooses the credential for an assertion; a.mu is held.
func (a *Authenticator) pick(rpID string, allow []descriptor, forced []byte) (*Credential, error) {
	if forced != nil {
		if c := a.find(forced); c != nil {
			return c, nil
		}
		return nil, ErrNoCredential
	}
	if len(allow) > 0 {
		for _, d := range allow {
			id, err := decodeB64(d.ID)
			if err != nil {
				continue
			}
			if c := a.find(id); c != nil && c.RPID == rpID {
				return c, nil
			}
		}
		return nil, ErrNoCredential
	}
	for i := len(a.creds) - 1; i >= 0; i-- {
		if a.creds[i].RPID == rpID {
			return a.creds[i], nil
		}
	}
	return nil, ErrNoCredential
}

// Sign signs authenticatorData ‖ SHA-256(clientDataJSON) with the
// credential's key as WebAuthn specifies (ECDSA as ASN.1 DER, RSA
// PKCS #1 v1.5 with SHA-256, Ed25519 over the message itself).
func Sign(c *Credential, authData, clientDataJSON []byte) ([]byte, error) {
	h := sha256.Sum256(clientDataJSON)
	msg := append(append([]byte(nil), authData...), h[:]...)
	switch c.Algorithm {
	case ES256:
		d := sha256.Sum256(msg)
		return ecdsa.SignASN1(rand.Reader, c.Signer.(*ecdsa.PrivateKey), d[:])
	case RS256:
		d := sha256.Sum256(msg)
		return rsa.SignPKCS1v15(rand.Reader, c.Signer.(*rsa.PrivateKey), crypto.SHA256, d[:])
	case EdDSA:
		return ed25519.Sign(c.Signer.(ed25519.PrivateKey), msg), nil
	}
	return nil, ErrBadAlgorithmID
}

func generate(alg Algorithm) (crypto.Signer, error) {
	switch alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		return rsa.GenerateKey(rand.Reader, 2048)
	case EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("%w: %v", ErrBadAlgorithmID, alg)
}

// encMode is CTAP2 canonical CBOR, as authenticators encode.
var encMode = func() cbor.EncMode {
	m, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// COSE key parameters (RFC 9052/9053).
const (
	coseKty    = 1
	coseAlg    = 3
	coseCrv    = -1 // EC2/OKP crv; RSA n
	coseX      = -2 // EC2/OKP x; RSA e
	coseY      = -3
	ktyOKP     = 1
	ktyEC2     = 2
	ktyRSA     = 3
	crvP256    = 1
	crvEd25519 = 6
)

// COSEKey encodes a public key as a COSE_Key in CTAP2 canonical CBOR.
func COSEKey(pub crypto.PublicKey) ([]byte, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := k.Bytes() // 0x04 ‖ X ‖ Y
		if err != nil {
			return nil, err
		}
		return encMode.Marshal(map[int]any{coseKty: ktyEC2, coseAlg: int64(ES256), coseCrv: crvP256, coseX: raw[1:33], coseY: raw[33:65]})
	case *rsa.PublicKey:
		e := big32(k.E)
		return encMode.Marshal(map[int]any{coseKty: ktyRSA, coseAlg: int64(RS256), coseCrv: k.N.Bytes(), coseX: e})
	case ed25519.PublicKey:
		return encMode.Marshal(map[int]any{coseKty: ktyOKP, coseAlg: int64(EdDSA), coseCrv: crvEd25519, coseX: []byte(k)})
	}
	return nil, fmt.Errorf("%w: %T", ErrBadAlgorithmID, pub)
}

func big32(e int) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(e))
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// clientDataJSON serialises CollectedClientData in the order browsers use.
func clientDataJSON(typ string, challenge []byte, origin string) []byte {
	type cd struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}
	b, _ := json.Marshal(cd{Type: typ, Challenge: b64.EncodeToString(challenge), Origin: origin})
	return b
}

func hostOf(origin string) string {
	u, err := url.Parse(origin)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
