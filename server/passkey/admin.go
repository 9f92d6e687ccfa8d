package passkey

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/store"
)

// PasskeyInfo describes a stored passkey (nothing secret; no public key).
type PasskeyInfo struct {
	ID                string     `json:"id"` // base64url credential id
	RPID              string     `json:"rpId"`
	Algorithm         int64      `json:"alg"`
	AttestationFormat string     `json:"attestationFormat"`
	AAGUID            string     `json:"aaguid"`
	SignCount         uint32     `json:"signCount"`
	BackupEligible    bool       `json:"backupEligible"`
	BackupState       bool       `json:"backupState"`
	UserVerified      bool       `json:"userVerified"`
	PRF               *bool      `json:"prf,omitempty"`
	Transports        []string   `json:"transports,omitempty"`
	CreatedAt         time.Time  `json:"createdAt"`
	UpdatedAt         time.Time  `json:"updatedAt"`
	RevokedAt         *time.Time `json:"revokedAt,omitempty"`
}

func (c *credential) info() PasskeyInfo {
	return PasskeyInfo{ID: c.idString(), RPID: c.RPID, Algorithm: c.Algorithm, AttestationFormat: c.Format,
		AAGUID: aaguidString(c.AAGUID), SignCount: c.SignCount, BackupEligible: c.BE, BackupState: c.BS, UserVerified: c.UV,
		PRF: c.PRF, Transports: c.Transports, CreatedAt: c.Created, UpdatedAt: c.Updated, RevokedAt: c.Revoked}
}

// ListPasskeys lists the owner's passkeys, revoked ones included, oldest
// first.
func (s *Service) ListPasskeys(ctx context.Context, owner enclave.Owner) ([]PasskeyInfo, error) {
	cs, err := s.loadOwnerCredentials(ctx, owner, "")
	if err != nil {
		return nil, err
	}
	out := make([]PasskeyInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	return out, nil
}

// Status is what is stored for an owner.
type Status struct {
	Passkeys int  // active passkeys
	HasKey   bool // a key is stored under Method
}

// Status reports the owner's active passkeys and whether a key is stored
// (Portal's /passkeys/status).
func (s *Service) Status(ctx context.Context, owner enclave.Owner) (Status, error) {
	cs, err := s.loadOwnerCredentials(ctx, owner, "")
	if err != nil {
		return Status{}, err
	}
	has, err := s.custody.HasKey(ctx, owner, Method)
	return Status{Passkeys: len(active(cs)), HasKey: has}, err
}

// RevokePasskey revokes one passkey of owner. The record is kept (marked
// revoked) so that its later use is refused with credential_revoked.
// actor is who asked, for the audit line ("admin:<key id>").
func (s *Service) RevokePasskey(ctx context.Context, owner enclave.Owner, credentialID, actor string) error {
	id, err := base64.RawURLEncoding.DecodeString(trimPad(credentialID))
	if err != nil || len(id) == 0 {
		return ErrPasskeyNotFound
	}
	c, err := s.loadCredential(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (c.Owner != owner || c.Revoked != nil)) {
		return ErrPasskeyNotFound
	}
	if err != nil {
		return err
	}
	if err := s.audit.Record(ctx, audit.Event{Action: audit.ActionPasskeyRevoke, Outcome: audit.OutcomeSuccess, Actor: actor,
		Owner: string(owner), Method: Method, Fields: map[string]string{"credential": credentialIDString(id)}}); err != nil {
		return apierr.ErrAuditFailed.Wrap(err)
	}
	now := s.now().UTC()
	defer s.wroteCredentials(owner, id)
	return s.db.Update(ctx, func(tx *store.Tx) error {
		cur, err := getCredential(tx, id)
		if err != nil {
			return err
		}
		if cur.Revoked == nil {
			cur.Revoked, cur.Updated = &now, now
		}
		return putCredential(tx, cur)
	})
}

// ResetResult is what ResetPasskeys did.
type ResetResult struct {
	Revoked    int  `json:"revoked"`
	KeyDeleted bool `json:"keyDeleted"`
}

// ResetPasskeys revokes every passkey of owner and destroys the stored
// key, so the user can register afresh with a session token. Disabled
// unless Options.AllowReset (decisions/05): it never re-binds the old key.
func (s *Service) ResetPasskeys(ctx context.Context, owner enclave.Owner, actor string) (*ResetResult, error) {
	if !s.opts.AllowReset {
		return nil, ErrResetDisabled
	}
	if err := owner.Validate(); err != nil {
		return nil, err
	}
	cs, err := s.loadOwnerCredentials(ctx, owner, "")
	if err != nil {
		return nil, err
	}
	n := len(active(cs))
	if err := s.audit.Record(ctx, audit.Event{Action: "admin_passkey_reset", Outcome: audit.OutcomeSuccess, Actor: actor,
		Owner: string(owner), Method: Method, Fields: map[string]string{"revoked": strconv.Itoa(n), "key_destroyed": "true"}}); err != nil {
		return nil, apierr.ErrAuditFailed.Wrap(err)
	}
	now := s.now().UTC()
	var written [][]byte
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		cs, err := ownerCredentials(tx, owner, "")
		if err != nil {
			return err
		}
		for _, c := range cs {
			written = append(written, c.ID)
			if c.Revoked == nil {
				c.Revoked, c.Updated = &now, now
				if err := putCredential(tx, c); err != nil {
					return err
				}
			}
		}
		return nil
	})
	s.wroteCredentials(owner, written...)
	if err != nil {
		return nil, err
	}
	out := &ResetResult{Revoked: n}
	switch err := s.custody.DeleteKey(ctx, owner, Method); {
	case err == nil:
		out.KeyDeleted = true
	case !errors.Is(err, apierr.ErrNotFound):
		return nil, err
	}
	return out, nil
}

// DeleteOwner removes every credential record of owner (the admin's
// "delete user"; the caller audits and deletes the keys). It returns how
// many there were.
func (s *Service) DeleteOwner(ctx context.Context, owner enclave.Owner) (int, error) {
	var n int
	var written [][]byte
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		n = 0
		cs, err := ownerCredentials(tx, owner, "")
		if err != nil {
			return err
		}
		for _, c := range cs {
			written = append(written, c.ID)
			if err := tx.Delete(store.BucketCredentials, credKey(c.ID)); err != nil {
				return err
			}
		}
		n = len(cs)
		_, err = tx.DeletePrefix(store.BucketCredentials, indexPrefix(owner))
		return err
	})
	s.wroteCredentials(owner, written...)
	return n, err
}
