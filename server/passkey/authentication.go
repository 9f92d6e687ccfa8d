package passkey

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/ratelimit"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

// AuthenticationRequest begins an authentication.
type AuthenticationRequest struct {
	// Subject is the user to authenticate; nil begins a discoverable
	// ceremony (the credential names its user).
	Subject *Subject
	// OwnerPrefix restricts a discoverable ceremony to credentials whose
	// owner starts with it; "" means OwnerPrefixUser (native users), so a
	// Portal credential never releases through the native API.
	OwnerPrefix string
	// RPID names a configured relying party; "" is the default one.
	RPID string
	// RecipientPublicKey, when set, is the client's HPKE public key
	// (X25519, 32 bytes, or ML-KEM-768+X25519, 1216 bytes). The challenge
	// is SHA-256(Nonce ‖ RecipientPublicKey) and the key is released only
	// sealed to it (decisions/08).
	RecipientPublicKey []byte
	ClientAddr         string
}

// AuthenticationBegin is the answer to BeginAuthentication.
type AuthenticationBegin struct {
	CeremonyID string
	// Options are the request options for navigator.credentials.get (the
	// "publicKey" member).
	Options protocol.PublicKeyCredentialRequestOptions
	// Nonce is set with a recipient key: the client checks that
	// challenge = SHA-256(Nonce ‖ its recipient key) before it signs.
	Nonce   []byte
	Expires time.Time
}

// BeginAuthentication starts an authentication. For a user without
// passkeys (or an unknown user id) it answers exactly as for a known one,
// with decoy credential ids (decisions/07).
func (s *Service) BeginAuthentication(ctx context.Context, req AuthenticationRequest) (*AuthenticationBegin, error) {
	out, err := s.beginAuthentication(ctx, req)
	if err != nil {
		var owner enclave.Owner
		if req.Subject != nil {
			owner = req.Subject.Owner
		}
		return nil, s.refuse(ctx, err, owner, req.ClientAddr, "authentication_begin")
	}
	return out, nil
}

func (s *Service) beginAuthentication(ctx context.Context, req AuthenticationRequest) (*AuthenticationBegin, error) {
	rp, err := s.rp(req.RPID)
	if err != nil {
		return nil, err
	}
	c := &ceremony{kind: kindAuthentication, rp: rp, addr: req.ClientAddr, prefix: req.OwnerPrefix}
	if c.prefix == "" {
		c.prefix = OwnerPrefixUser
	}
	var allow []protocol.CredentialDescriptor
	if req.Subject != nil {
		if err := req.Subject.validate(); err != nil {
			return nil, err
		}
		subj := *req.Subject
		c.subject = &subj
		s.maybeRefreshDecoyShapes()
		creds, err := s.loadOwnerCredentials(ctx, subj.Owner, rp.cfg.ID)
		if err != nil {
			return nil, err
		}
		if creds = active(creds); len(creds) > 0 {
			allow = descriptors(creds)
		} else {
			allow = s.decoyDescriptors(rp.cfg.ID, subj.Owner, subj.UserID)
		}
	}
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	challenge := nonce
	if req.RecipientPublicKey != nil {
		if err := enclave.ValidRecipientKey(req.RecipientPublicKey); err != nil {
			return nil, err
		}
		c.recipient = bytes.Clone(req.RecipientPublicKey)
		challenge = RecipientChallenge(nonce, c.recipient)
	}
	opts := []webauthn.LoginOption{webauthn.WithChallenge(challenge)}
	if allow != nil {
		opts = append(opts, webauthn.WithAllowedCredentials(allow))
	}
	assertion, session, err := rp.wa.BeginDiscoverableLogin(opts...)
	if err != nil {
		return nil, apierr.ErrInternal.Wrap(err)
	}
	c.session = *session
	if err := s.addCeremony(ctx, c); err != nil {
		return nil, err
	}
	rp.begun.Add(1)
	out := &AuthenticationBegin{CeremonyID: c.id, Options: assertion.Response, Expires: c.expires}
	if c.recipient != nil {
		out.Nonce = nonce
	}
	return out, nil
}

// RecipientChallenge is the challenge of a ceremony bound to an HPKE
// recipient key: SHA-256(nonce ‖ recipientPublicKey) (decisions/08).
// Clients recompute it before signing.
func RecipientChallenge(nonce, recipientPublicKey []byte) []byte {
	h := sha256.New()
	h.Write(nonce)
	h.Write(recipientPublicKey)
	return h.Sum(nil)
}

// ReleaseInfo is the HPKE info a released key is sealed with: it binds the
// ciphertext to the ceremony and the user. Clients open with the same.
func ReleaseInfo(ceremonyID, userID string) []byte {
	return []byte("keywarden passkey release v1\x00" + ceremonyID + "\x00" + userID)
}

// FinishAuthenticationRequest finishes an authentication.
type FinishAuthenticationRequest struct {
	CeremonyID string
	// RPID, when not empty, must be the ceremony's relying party.
	RPID string
	// Credential is the assertion response JSON (an object, or a JSON
	// string holding one). Its userHandle may be base64url, the plain
	// string, empty or absent.
	Credential []byte
	// RecipientPublicKey, when set, must equal the key given at begin (a
	// key swapped on the way is refused).
	RecipientPublicKey []byte
	// ReplaceKey, when set, stores this key in place of the user's key
	// (the old one kept as a prior version) instead of releasing it: the
	// assertion authorizes the write (Portal's finish-login/write).
	ReplaceKey       []byte
	ReplaceKeyFormat string
	ReplaceClientID  string
	ClientAddr       string
}

// Authentication is the result of FinishAuthentication. Exactly one of
// Key (plain release), Sealed (release to the ceremony's recipient key)
// or Replaced (a ReplaceKey write) is set.
type Authentication struct {
	Subject      Subject
	CredentialID string // base64url
	Key          secret.Bytes
	KeyFormat    string
	Sealed       *SealedKey
	Replaced     bool
	// ProofID names this authentication for RegistrationRequest.
	// AssertionCeremonyID (adding a passkey), for the ceremony lifetime.
	ProofID string
}

// SealedKey is a key sealed with HPKE to the ceremony's recipient key,
// with info = ReleaseInfo(ceremonyID, userID).
type SealedKey struct {
	Enc        []byte
	Ciphertext []byte
	Suite      string
}

// FinishAuthentication verifies an assertion and releases (or replaces)
// the key of the credential's user. It makes no TPM command: the key
// comes from custody (one store read) and is opened with the root key in
// memory. It writes the store only when the credential's counter or
// backup flags changed.
func (s *Service) FinishAuthentication(ctx context.Context, req FinishAuthenticationRequest) (*Authentication, error) {
	now := s.now()
	if ok, wait := checkLimit(s.addrLimit, ratelimit.AddrKey(req.ClientAddr), now); !ok {
		return nil, s.refuse(ctx, apierr.ErrRateLimited.WithRetry(wait), "", req.ClientAddr, "authentication_finish")
	}
	c, err := s.takeCeremony(ctx, now, req.CeremonyID, kindAuthentication)
	if err != nil {
		if _, ok := apierr.As(err); ok {
			s.addrLimit.Spend(ratelimit.AddrKey(req.ClientAddr), now)
		}
		return nil, s.refuse(ctx, err, "", req.ClientAddr, "authentication_finish")
	}
	out, owner, err := s.finishAuthentication(ctx, c, req)
	if err != nil {
		if e, ok := apierr.As(err); !ok || e.Code != apierr.ErrRateLimited.Code {
			s.addrLimit.Spend(ratelimit.AddrKey(req.ClientAddr), now)
		}
		return nil, s.refuse(ctx, err, owner, req.ClientAddr, "authentication_finish")
	}
	c.rp.done.Add(1)
	// Keep the finished ceremony as proof of a fresh assertion (adding a
	// passkey), single use like the ceremony. Proofs have their own store:
	// they count against no client's ceremony cap (in memory, bounded,
	// the oldest dropped first). The key is already released: a proof
	// that cannot be kept only means authenticating again to add a passkey.
	if err := s.putProof(ctx, c.id, out.Subject, c.rp, s.now()); err != nil {
		s.log.Warn("passkey: keeping the step-up proof failed", "err", err)
	}
	out.ProofID = c.id
	return out, nil
}

func (s *Service) finishAuthentication(ctx context.Context, c *ceremony, req FinishAuthenticationRequest) (*Authentication, enclave.Owner, error) {
	rp := c.rp
	var owner enclave.Owner
	if c.subject != nil {
		owner = c.subject.Owner
	}
	if req.RPID != "" && req.RPID != rp.cfg.ID {
		return nil, owner, ErrCeremonyRP
	}
	if req.RecipientPublicKey != nil && !bytes.Equal(req.RecipientPublicKey, c.recipient) {
		return nil, owner, ErrRecipientMismatch
	}
	if req.ReplaceKey != nil && c.recipient != nil {
		return nil, owner, apierr.ErrBadRequest.WithMessage("a key write cannot be combined with a sealed release")
	}
	raw, err := unquoteCredential(req.Credential)
	if err != nil {
		return nil, owner, err
	}
	// decisions/06: take the user handle out before go-webauthn sees it (it
	// would decode it as base64url and compare other bytes); compare it
	// ourselves below, in either form.
	parsed, handle, err := parseAssertion(raw)
	if err != nil {
		return nil, owner, err
	}

	// Find the credential by its id; never assume it is one we listed
	// (iOS lets the user pick any passkey of the RP).
	//
	// No user enumeration (decisions/07): begin lists real ids for known
	// users and decoys for others, so until the signature verifies the
	// answer must not depend on what the id names. An id that is unknown
	// here (or of another RP, or, discoverable, of owners this API does not
	// serve) is verified against a decoy key, as much work as a real one;
	// every check that reads the record (owner, revocation, user handle,
	// backup eligibility) comes after the signature, so only a holder of
	// the key learns its outcome. Before that, a failure is either
	// independent of the record (origin, RP ID hash, challenge, flags) or
	// the one ErrCredentialUnknown.
	rec, err := s.loadCredential(ctx, parsed.RawID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, owner, err
	}
	known := err == nil && rec.RPID == rp.cfg.ID && (c.subject != nil || hasPrefix(rec.Owner, c.prefix))
	if known {
		owner = rec.Owner
	}
	if err := s.checkClientData(rp, c, parsed.Response.CollectedClientData, protocol.AssertCeremony); err != nil {
		return nil, owner, err
	}
	ad := parsed.Response.AuthenticatorData
	if err := s.checkAuthData(rp, ad); err != nil {
		return nil, owner, err
	}
	be, bs := ad.Flags.HasBackupEligible(), ad.Flags.HasBackupState()

	// go-webauthn verifies everything again, and the signature. It gets
	// the one credential found above (or the decoy), with BE as asserted
	// (a change is checked below, after the signature; synced passkeys
	// turn it on: decisions/31), and a session bound to the credential's
	// user.
	flags := protocol.FlagUserPresent | protocol.FlagUserVerified
	if be {
		flags |= protocol.FlagBackupEligible
	}
	if bs {
		flags |= protocol.FlagBackupState
	}
	wc := webauthn.Credential{ID: parsed.RawID, PublicKey: s.decoyKey, Flags: webauthn.NewCredentialFlags(flags)}
	userID := []byte("decoy")
	if known {
		wc.PublicKey, wc.AttestationFormat, wc.AttestationType = rec.PublicKey, rec.Format, rec.AttType
		wc.Authenticator = webauthn.Authenticator{AAGUID: rec.AAGUID, SignCount: rec.SignCount}
		userID = []byte(rec.UserID)
	}
	session := c.session
	session.UserID = userID
	session.AllowedCredentialIDs = nil
	user := &waUser{id: userID, creds: []webauthn.Credential{wc}}
	if _, err := rp.wa.ValidateLogin(user, session, parsed); err != nil {
		// Nothing here is attributable to the credential's holder: anyone
		// can name a credential id that begin listed and sign with another
		// key. It spends the address's budget (FinishAuthentication) and
		// the ceremony (single use), never the owner's. A bad signature is
		// ErrCredentialUnknown, as the decoy key always gives.
		return nil, owner, protocolCause(err, ErrVerification)
	}
	if !known {
		return nil, owner, ErrCredentialUnknown // the decoy key's private half is never used
	}

	// The signature verifies: what follows comes from a holder of the
	// private key, who may learn why it is refused.
	if c.subject != nil && rec.Owner != c.subject.Owner {
		return nil, owner, ErrCredentialNotUsers
	}
	if rec.Revoked != nil {
		return nil, owner, ErrCredentialRevoked
	}
	if handle != nil && !userHandleMatches(*handle, rec.UserID) {
		return nil, owner, ErrUserHandle
	}
	if rec.BE && !be {
		return nil, owner, ErrBackupFlags
	}
	// The per-user budget is spent only by such failures (a counter that
	// goes backwards: a cloned authenticator), so only a holder can run it
	// down.
	if ok, wait, err := s.checkBudget(ctx, rec.Owner, s.now()); err != nil {
		return nil, owner, err
	} else if !ok {
		return nil, owner, apierr.ErrRateLimited.WithRetry(wait)
	}

	// Sign counter: 0 and 0 means the authenticator keeps none (synced
	// passkeys); otherwise it must grow.
	n := ad.Counter
	counterChanged := n != rec.SignCount
	if counterChanged && n <= rec.SignCount || (!counterChanged && n != 0) {
		return nil, owner, s.counterRegressed(ctx, rec, n, req.ClientAddr)
	}
	if counterChanged || be != rec.BE || bs != rec.BS {
		if err := s.updateCredential(ctx, rec, n, counterChanged, be, bs, req.ClientAddr); err != nil {
			return nil, owner, err
		}
	}

	subj := Subject{Owner: rec.Owner, UserID: rec.UserID}
	out := &Authentication{Subject: subj, CredentialID: rec.idString()}
	// The key is stored or released by the keys service, as on every
	// path: audited first (fail closed) and counted in the metrics.
	kreq := keys.Request{Actor: string(rec.Owner), Remote: req.ClientAddr, Basis: "passkey_assertion",
		Fields: map[string]string{"credential": rec.idString(), "rp_id": rp.cfg.ID}}
	if req.ReplaceKey != nil {
		if _, err := s.keys.Store(ctx, kreq, rec.Owner, Method, req.ReplaceKey,
			enclave.PutOptions{Format: req.ReplaceKeyFormat, ClientID: req.ReplaceClientID}); err != nil {
			return nil, owner, err
		}
		out.Replaced = true
		return out, owner, nil
	}

	kreq.Fields["sealed"] = boolString(c.recipient != nil)
	key, info, err := s.keys.Release(ctx, kreq, rec.Owner, Method, enclave.Access{}, nil)
	if err != nil {
		return nil, owner, err
	}
	out.KeyFormat = info.Format
	if c.recipient != nil {
		enc, ct, suite, err := enclave.SealToRecipient(c.recipient, key.Reveal(), ReleaseInfo(c.id, rec.UserID))
		key.Wipe()
		if err != nil {
			return nil, owner, err
		}
		out.Sealed = &SealedKey{Enc: enc, Ciphertext: ct, Suite: suite}
		return out, owner, nil
	}
	out.Key = key
	return out, owner, nil
}

// counterRegressed spends the owner's failure budget (the signature
// verified: only a holder of the key gets here), audits (durably: a
// possible cloned authenticator is worth a line) and refuses.
func (s *Service) counterRegressed(ctx context.Context, rec *credential, got uint32, addr string) error {
	if err := s.spendBudget(ctx, rec.Owner); err != nil {
		return err
	}
	_ = s.audit.Record(ctx, audit.Event{Action: audit.ActionRefusal, Outcome: audit.OutcomeRefused, Reason: ErrCounterRegressed.Code,
		Owner: string(rec.Owner), Method: Method, Remote: addr,
		Fields: map[string]string{"credential": rec.idString(), "stored": strconv.FormatUint(uint64(rec.SignCount), 10),
			"received": strconv.FormatUint(uint64(got), 10)}})
	s.log.Warn("passkey: signature counter did not increase (cloned authenticator?)", "owner", string(rec.Owner),
		"credential", rec.idString(), "stored", rec.SignCount, "received", got)
	return ErrCounterRegressed
}

// updateCredential records a new counter and backup flags. It re-reads
// the record in the transaction so two concurrent assertions with the
// same counter cannot both pass.
func (s *Service) updateCredential(ctx context.Context, rec *credential, n uint32, counterChanged, be, bs bool, addr string) error {
	now := s.now().UTC()
	var regressed bool
	defer s.wroteCredentials(rec.Owner, rec.ID)
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		regressed = false
		cur, err := getCredential(tx, rec.ID)
		if errors.Is(err, store.ErrNotFound) {
			return ErrCredentialUnknown
		}
		if err != nil {
			return err
		}
		if cur.Revoked != nil {
			return ErrCredentialRevoked
		}
		if counterChanged {
			if n <= cur.SignCount {
				regressed = true
				return nil
			}
			cur.SignCount = n
		}
		cur.BE, cur.BS, cur.Updated = be, bs, now
		return putCredential(tx, cur)
	})
	if err != nil {
		return err
	}
	if regressed {
		return s.counterRegressed(ctx, rec, n, addr)
	}
	return nil
}

// userHandleMatches compares a received user handle with the user id:
// an empty handle says nothing (Safari); otherwise it must be the id's
// bytes base64url-encoded (browsers, Android) or the id itself as a plain
// string (iOS through Portal's SDK).
func userHandleMatches(handle, userID string) bool {
	if handle == "" || handle == userID {
		return true
	}
	b, err := base64.RawURLEncoding.DecodeString(trimPad(handle))
	return err == nil && string(b) == userID
}

func trimPad(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}

// unquoteCredential accepts a credential as a JSON object or as a JSON
// string holding one, and bounds its size.
func unquoteCredential(raw []byte) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || len(raw) > MaxCredentialJSON {
		return nil, ErrInvalidCredential
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, ErrInvalidCredential.Wrap(err)
		}
		raw = bytes.TrimSpace([]byte(s))
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, ErrInvalidCredential
	}
	return raw, nil
}

// parseAssertion decodes an untrusted assertion once: it takes the user
// handle out as given (a string, or nil when absent or null) and hands the
// rest to go-webauthn's parser, which never sees the handle (decisions/06:
// go-webauthn would decode it as base64url and compare other bytes). Like
// go-webauthn's own decoder it refuses trailing data.
//
// The base64url members are read as plain strings and decoded here, as
// go-webauthn's URLEncodedBase64 decodes them (JSON escapes undone,
// trailing '=' trimmed, unpadded base64url): its UnmarshalJSON rescans and
// decodes every member a second time, and was about half the cost of the
// parse. Extension outputs go through go-webauthn's own decoder unless
// they are the empty object (which decodes to nothing).
func parseAssertion(raw []byte) (*protocol.ParsedCredentialAssertionData, *string, error) {
	var a struct {
		ID                      string          `json:"id"`
		Type                    string          `json:"type"`
		RawID                   *string         `json:"rawId"`
		ClientExtensionResults  json.RawMessage `json:"clientExtensionResults"`
		AuthenticatorAttachment string          `json:"authenticatorAttachment"`
		Response                *struct {
			ClientDataJSON    *string         `json:"clientDataJSON"`
			AuthenticatorData *string         `json:"authenticatorData"`
			Signature         *string         `json:"signature"`
			UserHandle        json.RawMessage `json:"userHandle"`
		} `json:"response"`
	}
	// json.Unmarshal refuses trailing data as the decoder does; on
	// failure the decoder runs again only to say why.
	if err := json.Unmarshal(raw, &a); err != nil {
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&a); err != nil {
			return nil, nil, ErrInvalidCredential.Wrap(err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, nil, ErrInvalidCredential.WithMessage("the credential has trailing data")
		}
		return nil, nil, ErrInvalidCredential.Wrap(err)
	}
	if a.Response == nil {
		return nil, nil, ErrInvalidCredential.WithMessage("the credential has no response object")
	}
	var handle *string
	if uh := bytes.TrimSpace(a.Response.UserHandle); len(uh) > 0 && !bytes.Equal(uh, []byte("null")) {
		var h string
		if err := json.Unmarshal(uh, &h); err != nil {
			return nil, nil, ErrInvalidCredential.WithMessage("response.userHandle must be a string")
		}
		handle = &h
	}
	car := protocol.CredentialAssertionResponse{
		PublicKeyCredential: protocol.PublicKeyCredential{
			Credential:              protocol.Credential{ID: a.ID, Type: a.Type},
			AuthenticatorAttachment: a.AuthenticatorAttachment,
		},
	}
	for _, f := range []struct {
		in  *string
		out *protocol.URLEncodedBase64
	}{
		{a.RawID, &car.RawID},
		{a.Response.ClientDataJSON, &car.AssertionResponse.ClientDataJSON},
		{a.Response.AuthenticatorData, &car.AssertionResponse.AuthenticatorData},
		{a.Response.Signature, &car.AssertionResponse.Signature},
	} {
		if f.in == nil { // absent or null
			continue
		}
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(*f.in, "="))
		if err != nil {
			return nil, nil, ErrInvalidCredential.Wrap(err)
		}
		*f.out = b
	}
	if ext := bytes.TrimSpace(a.ClientExtensionResults); len(ext) > 0 && !isEmptyObject(ext) {
		if err := car.ClientExtensionResults.UnmarshalJSON(ext); err != nil {
			return nil, nil, ErrInvalidCredential.Wrap(err)
		}
	}
	parsed, err := car.Parse()
	if err != nil {
		return nil, nil, ErrInvalidCredential.Wrap(err)
	}
	return parsed, handle, nil
}

// isEmptyObject reports whether b is a JSON object with no members.
func isEmptyObject(b []byte) bool {
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}' && len(bytes.TrimSpace(b[1:len(b)-1])) == 0
}

// coseAlgorithm reads the alg of a COSE_Key (0 when unreadable).
func coseAlgorithm(key []byte) int64 {
	var pk webauthncose.PublicKeyData
	if webauthncbor.Unmarshal(key, &pk) != nil {
		return 0
	}
	return pk.Algorithm
}
