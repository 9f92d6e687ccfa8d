package passkey

import (
	"context"
	"encoding/base64"
	"errors"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/ratelimit"
	"github.com/keywarden/keywarden/server/httpx"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

// RegistrationRequest begins a registration.
type RegistrationRequest struct {
	// Subject is the user the caller vouched for (a session token, or the
	// Portal client the adapter resolved).
	Subject Subject
	// RPID names a configured relying party; "" is the default one.
	RPID string
	// DisplayName is shown by the authenticator; "" means the user id.
	DisplayName string
	// AssertionCeremonyID names an authentication of the same user that
	// finished within the ceremony lifetime. It is required when a key is
	// already stored for the user (a session token alone never binds a new
	// passkey to an existing key, decisions/05) and is used up here.
	AssertionCeremonyID string
	// ClientAddr is the client's address (open ceremonies are capped per
	// address).
	ClientAddr string
	// KeyAtFinish says the caller's finish always carries a key (Portal's
	// SDK): over an unclaimed imported key, which only a finish without a
	// key claims, begin is refused with ErrClaimWithKey before the user
	// makes a passkey that could not be registered.
	KeyAtFinish bool
}

// RegistrationBegin is the answer to BeginRegistration.
type RegistrationBegin struct {
	CeremonyID string
	// Options are the creation options for navigator.credentials.create
	// (the "publicKey" member).
	Options protocol.PublicKeyCredentialCreationOptions
	Expires time.Time
	// KeyRequired reports that finish must carry the key (none is stored
	// yet); with an existing key and an assertion the key is optional and,
	// when given, replaces the stored one (the old one kept as a prior
	// version, decisions/03).
	KeyRequired bool
	// ClaimsImportedKey reports that the stored key is an unclaimed import
	// (the admin import, within keys.import_claim_window) and that finish,
	// without a key, claims it: this passkey then reaches the imported key.
	ClaimsImportedKey bool
}

// BeginRegistration starts registering a passkey for req.Subject.
func (s *Service) BeginRegistration(ctx context.Context, req RegistrationRequest) (*RegistrationBegin, error) {
	out, err := s.beginRegistration(ctx, req)
	if err != nil {
		return nil, s.refuse(ctx, err, req.Subject.Owner, req.ClientAddr, "registration_begin")
	}
	return out, nil
}

func (s *Service) beginRegistration(ctx context.Context, req RegistrationRequest) (*RegistrationBegin, error) {
	if err := req.Subject.validate(); err != nil {
		return nil, err
	}
	rp, err := s.rp(req.RPID)
	if err != nil {
		return nil, err
	}
	if len(req.DisplayName) > 128 {
		return nil, apierr.ErrBadRequest.WithMessage("displayName is longer than 128 characters")
	}
	stepUp := false
	if req.AssertionCeremonyID != "" {
		if err := s.takeProof(ctx, req.AssertionCeremonyID, req.Subject.Owner, rp); err != nil {
			return nil, err
		}
		stepUp = true
	}
	info, err := s.custody.Info(ctx, req.Subject.Owner, Method)
	if err != nil && !errors.Is(err, apierr.ErrNotFound) {
		return nil, err
	}
	hasKey := info != nil
	creds, err := s.loadOwnerCredentials(ctx, req.Subject.Owner, "")
	if err != nil {
		return nil, err
	}
	creds = active(creds)
	claim := false
	if hasKey && !stepUp {
		// A session token alone never binds a passkey to a stored key
		// (decisions/05), except the first one of an owner over a key the
		// admin import left unclaimed, before its deadline: nothing else
		// can ever reach such a key.
		if err := s.claimable(info, creds); err != nil {
			return nil, err
		}
		if req.KeyAtFinish {
			return nil, ErrClaimWithKey
		}
		claim = true
	}
	if len(creds) >= s.opts.MaxCredentialsPerUser {
		return nil, ErrTooManyPasskeys
	}
	display := req.DisplayName
	if display == "" {
		display = req.Subject.UserID
	}
	user := &waUser{id: []byte(req.Subject.UserID), displayName: display}
	creation, session, err := rp.wa.BeginRegistration(user,
		webauthn.WithCredentialParameters(credentialParameters),
		webauthn.WithExclusions(descriptors(creds)),
		webauthn.WithExtensions(webauthn.WithExtensionCredProps(), webauthn.WithExtensionPRFSupport()),
	)
	if err != nil {
		return nil, apierr.ErrInternal.Wrap(err)
	}
	c := &ceremony{kind: kindRegistration, rp: rp, subject: &req.Subject, session: *session, addr: req.ClientAddr,
		stepUp: stepUp, keyStored: hasKey, claim: claim}
	if err := s.addCeremony(ctx, c); err != nil {
		return nil, err
	}
	rp.begun.Add(1)
	return &RegistrationBegin{CeremonyID: c.id, Options: creation.Response, Expires: c.expires, KeyRequired: !hasKey,
		ClaimsImportedKey: claim}, nil
}

// claimable tells whether a registration without an assertion may claim
// the stored key described by info: an unclaimed import, before its
// deadline, of an owner with no active passkey. Otherwise it returns the
// refusal (ErrKeyExists, or ErrClaimExpired past the deadline).
func (s *Service) claimable(info *enclave.KeyInfo, activeCreds []*credential) error {
	if info.ClaimDeadline == nil || len(activeCreds) > 0 {
		return ErrKeyExists
	}
	if !s.now().Before(*info.ClaimDeadline) {
		return ErrClaimExpired
	}
	return nil
}

// FinishRegistrationRequest finishes a registration.
type FinishRegistrationRequest struct {
	CeremonyID string
	// RPID, when not empty, must be the ceremony's relying party (the
	// Portal adapter passes the SDK's relyingParty).
	RPID string
	// Credential is the registration response JSON (an object, or a JSON
	// string holding one, as Portal's SDK sends it).
	Credential []byte
	// Key is the client's encryption key to store; required when none is
	// stored. Its length is checked by the caller (the native API wants
	// 32..64 bytes) and by custody (1..1024).
	Key []byte
	// SealedKey, instead of Key, is the key sealed to the appliance key
	// with keys.StoreInfo(keys.RoutePasskeyRegistration, owner, Method):
	// opened once the ceremony names the owner.
	SealedKey *keys.SealedKey
	// KeyFormat is enclave.FormatBytes (default) or enclave.FormatText.
	KeyFormat string
	// ClientID is recorded with the key (the Portal client).
	ClientID   string
	ClientAddr string
}

// Registration is the result of FinishRegistration.
type Registration struct {
	Subject      Subject
	CredentialID string // base64url
	KeyStored    bool   // a key was stored by this registration
	KeyReplaced  bool   // it replaced a stored key (kept as a prior version)
	KeyClaimed   bool   // it claimed the imported key stored for the user
}

// FinishRegistration verifies the attestation, stores the credential and,
// when given, the key.
func (s *Service) FinishRegistration(ctx context.Context, req FinishRegistrationRequest) (*Registration, error) {
	now := s.now()
	if ok, wait := checkLimit(s.addrLimit, ratelimit.AddrKey(req.ClientAddr), now); !ok {
		return nil, s.refuse(ctx, apierr.ErrRateLimited.WithRetry(wait), "", req.ClientAddr, "registration_finish")
	}
	c, err := s.takeCeremony(ctx, now, req.CeremonyID, kindRegistration)
	if err != nil {
		if _, ok := apierr.As(err); ok {
			s.addrLimit.Spend(ratelimit.AddrKey(req.ClientAddr), now)
		}
		return nil, s.refuse(ctx, err, "", req.ClientAddr, "registration_finish")
	}
	out, err := s.finishRegistration(ctx, c, req)
	if err != nil {
		s.addrLimit.Spend(ratelimit.AddrKey(req.ClientAddr), now)
		return nil, s.refuse(ctx, err, c.subject.Owner, req.ClientAddr, "registration_finish")
	}
	c.rp.done.Add(1)
	return out, nil
}

func (s *Service) finishRegistration(ctx context.Context, c *ceremony, req FinishRegistrationRequest) (*Registration, error) {
	rp, subj := c.rp, *c.subject
	if req.RPID != "" && req.RPID != rp.cfg.ID {
		return nil, ErrCeremonyRP
	}
	if req.SealedKey != nil {
		if len(req.Key) > 0 {
			return nil, httpx.ErrKeyAndSealedKey
		}
		k, err := s.keys.OpenSealed(*req.SealedKey, keys.RoutePasskeyRegistration, subj.Owner, Method)
		if err != nil {
			return nil, err
		}
		defer k.Wipe()
		req.Key = k.Reveal()
	}
	if c.claim && len(req.Key) > 0 {
		return nil, ErrClaimWithKey
	}
	if len(req.Key) == 0 && !c.stepUp && !c.claim {
		return nil, ErrKeyRequired
	}
	raw, err := unquoteCredential(req.Credential)
	if err != nil {
		return nil, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(raw)
	if err != nil {
		return nil, ErrInvalidCredential.Wrap(err)
	}
	if err := s.checkClientData(rp, c, parsed.Response.CollectedClientData, protocol.CreateCeremony); err != nil {
		return nil, err
	}
	if err := s.checkAuthData(rp, parsed.Response.AttestationObject.AuthData); err != nil {
		return nil, err
	}
	user := &waUser{id: []byte(subj.UserID)}
	wc, err := rp.wa.CreateCredential(user, c.session, parsed)
	if err != nil {
		return nil, protocolCause(err, ErrAttestation)
	}
	now := s.now().UTC()
	rec := &credential{
		ID: wc.ID, Owner: subj.Owner, UserID: subj.UserID, RPID: rp.cfg.ID,
		PublicKey: wc.PublicKey, Algorithm: wc.Attestation.PublicKeyAlgorithm,
		Format: wc.AttestationFormat, AttType: wc.AttestationType, AAGUID: wc.Authenticator.AAGUID,
		SignCount: wc.Authenticator.SignCount,
		BE:        wc.Flags.BackupEligible, BS: wc.Flags.BackupState, UV: wc.Flags.UserVerified,
		PRF:        wc.Extensions.PRFEnabled,
		Attachment: string(wc.Authenticator.Attachment),
		Created:    now, Updated: now,
	}
	if rec.Algorithm == 0 {
		rec.Algorithm = coseAlgorithm(wc.PublicKey)
	}
	for _, t := range wc.Transport {
		rec.Transports = append(rec.Transports, string(t))
	}

	// Audit first: if the line cannot be made durable, nothing is stored.
	fields := map[string]string{"credential": rec.idString(), "rp_id": rp.cfg.ID, "fmt": rec.Format,
		"aaguid": aaguidString(rec.AAGUID), "step_up": boolString(c.stepUp), "key": boolString(len(req.Key) > 0)}
	if c.claim {
		fields["claim"] = "true"
	}
	if err := s.audit.Record(ctx, audit.Event{Action: audit.ActionPasskeyRegister, Outcome: audit.OutcomeSuccess,
		Actor: string(subj.Owner), Owner: string(subj.Owner), Method: Method, Remote: req.ClientAddr, Fields: fields}); err != nil {
		return nil, apierr.ErrAuditFailed.Wrap(err)
	}
	if c.claim {
		// Its own line, so that an operator finds every claim of an
		// imported key (the trust placed in the session token) with one
		// search.
		if err := s.audit.Record(ctx, audit.Event{Action: ActionImportClaimed, Outcome: audit.OutcomeSuccess,
			Actor: string(subj.Owner), Owner: string(subj.Owner), Method: Method, Remote: req.ClientAddr,
			Fields: map[string]string{"credential": rec.idString(), "rp_id": rp.cfg.ID}}); err != nil {
			return nil, apierr.ErrAuditFailed.Wrap(err)
		}
	}

	// The credential and the key go in together, in one transaction: a
	// credential never exists beside a key it was not allowed to reach (a
	// session token alone must not bind a passkey to a stored key,
	// decisions/05), and a refused key leaves no credential behind.
	out := &Registration{Subject: subj, CredentialID: rec.idString()}
	defer s.wroteCredentials(subj.Owner, rec.ID)
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		out.KeyStored, out.KeyReplaced, out.KeyClaimed = false, false, false
		if _, err := getCredential(tx, rec.ID); err == nil {
			return ErrCredentialExists
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		cs, err := ownerCredentials(tx, subj.Owner, "")
		if err != nil {
			return err
		}
		if len(active(cs)) >= s.opts.MaxCredentialsPerUser {
			return ErrTooManyPasskeys
		}
		if !c.stepUp {
			if _, err := tx.Get(store.BucketKeys, store.Key(string(subj.Owner), Method)); err == nil {
				if !c.claim || len(active(cs)) > 0 {
					return ErrKeyExists
				}
				// The claim is decided here, in the transaction that stores
				// the credential: of two registrations begun while the key
				// was unclaimed, only the first to finish claims it.
				switch err := s.custody.ClaimKeyTx(tx, subj.Owner, Method, s.now()); {
				case errors.Is(err, enclave.ErrNotClaimable):
					return ErrKeyExists
				case errors.Is(err, enclave.ErrClaimExpired):
					return ErrClaimExpired
				case err != nil:
					return err
				}
				out.KeyClaimed = true
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			} else if len(req.Key) == 0 {
				// The imported key was deleted since begin.
				return ErrKeyRequired
			}
		}
		if err := putCredential(tx, rec); err != nil {
			return err
		}
		if len(req.Key) > 0 {
			replaced, err := s.custody.PutKeyTx(tx, subj.Owner, Method, req.Key,
				enclave.PutOptions{NoOverwrite: !c.stepUp, Format: req.KeyFormat, ClientID: req.ClientID})
			if errors.Is(err, apierr.ErrKeyExists) {
				return ErrKeyExists
			}
			if err != nil {
				return err
			}
			out.KeyStored, out.KeyReplaced = true, replaced
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func aaguidString(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

func credentialIDString(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }
