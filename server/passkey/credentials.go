package passkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/store"
)

// credential is the stored record of one passkey. Nothing in it is secret
// (a public key and metadata); it is stored in the clear.
type credential struct {
	ID         []byte        `json:"id"`
	Owner      enclave.Owner `json:"owner"`
	UserID     string        `json:"userId"`
	RPID       string        `json:"rpId"`
	PublicKey  []byte        `json:"publicKey"` // COSE_Key
	Algorithm  int64         `json:"alg"`
	Format     string        `json:"fmt"`           // attestation format
	AttType    string        `json:"attType"`       // attestation type
	AAGUID     []byte        `json:"aaguid"`        // 16 bytes
	SignCount  uint32        `json:"signCount"`     // 0: the authenticator keeps no counter
	BE         bool          `json:"be"`            // backup eligible
	BS         bool          `json:"bs"`            // backup state
	UV         bool          `json:"uv"`            // user verified at registration
	PRF        *bool         `json:"prf,omitempty"` // prf.enabled as reported at registration (nil: not reported)
	Transports []string      `json:"transports,omitempty"`
	Attachment string        `json:"attachment,omitempty"`
	Created    time.Time     `json:"created"`
	Updated    time.Time     `json:"updated"`           // last counter or flag change (not every use: no fsync per release)
	Revoked    *time.Time    `json:"revoked,omitempty"` // revoked credentials are kept so their use gets a clear error
}

func (c *credential) idString() string { return base64.RawURLEncoding.EncodeToString(c.ID) }

// Keys in store.BucketCredentials:
//
//	"c" 0x00 base64url(credential id)                 → credential JSON
//	"o" 0x00 owner 0x00 base64url(credential id)      → RP ID (the owner's index)
func credKey(id []byte) []byte {
	return store.Key("c", base64.RawURLEncoding.EncodeToString(id))
}

func indexKey(owner enclave.Owner, id []byte) []byte {
	return store.Key("o", string(owner), base64.RawURLEncoding.EncodeToString(id))
}

func indexPrefix(owner enclave.Owner) []byte { return store.Prefix("o", string(owner)) }

func getCredential(tx *store.Tx, id []byte) (*credential, error) {
	k := credKey(id)
	b, err := tx.Get(store.BucketCredentials, k)
	if err != nil {
		return nil, err
	}
	if c, ok := decoded.get(string(k), b); ok {
		return c, nil
	}
	var c credential
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("passkey: credential record damaged: %w", err)
	}
	decoded.put(string(k), b, &c)
	cp := c
	return &cp, nil
}

// decodedCredentials remembers the decoding of stored credential records:
// a release reads its credential every time, and decoding the JSON is most
// of that read. An entry is used only while the stored bytes are exactly
// the bytes it was decoded from (compared on every read), so it can never
// be stale; callers get their own copy of the struct.
type decodedCredentials struct {
	mu sync.RWMutex
	m  map[string]decodedCredential
}

type decodedCredential struct {
	raw []byte
	c   credential
}

const maxDecodedCredentials = 100000

var decoded decodedCredentials

func (d *decodedCredentials) get(key string, raw []byte) (*credential, bool) {
	d.mu.RLock()
	e, ok := d.m[key]
	d.mu.RUnlock()
	if !ok || !bytes.Equal(e.raw, raw) {
		return nil, false
	}
	c := e.c
	c.ID, c.PublicKey, c.AAGUID, c.Transports = slices.Clone(c.ID), slices.Clone(c.PublicKey), slices.Clone(c.AAGUID), slices.Clone(c.Transports)
	return &c, true
}

func (d *decodedCredentials) put(key string, raw []byte, c *credential) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || len(d.m) >= maxDecodedCredentials {
		d.m = make(map[string]decodedCredential)
	}
	d.m[key] = decodedCredential{raw: raw, c: *c}
}

func putCredential(tx *store.Tx, c *credential) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := tx.Put(store.BucketCredentials, credKey(c.ID), b); err != nil {
		return err
	}
	return tx.Put(store.BucketCredentials, indexKey(c.Owner, c.ID), []byte(c.RPID))
}

// ownerCredentials returns the owner's credentials (revoked ones too),
// oldest first. rpID "" means every RP.
func ownerCredentials(tx *store.Tx, owner enclave.Owner, rpID string) ([]*credential, error) {
	var ids [][]byte
	prefix := indexPrefix(owner)
	err := tx.ForEach(store.BucketCredentials, prefix, func(k, v []byte) error {
		if rpID != "" && string(v) != rpID {
			return nil
		}
		id, err := base64.RawURLEncoding.DecodeString(string(k[len(prefix):]))
		if err != nil {
			return fmt.Errorf("passkey: credential index damaged: %w", err)
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*credential, 0, len(ids))
	for _, id := range ids {
		c, err := getCredential(tx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sortByCreated(out)
	return out, nil
}

func sortByCreated(cs []*credential) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].Created.Before(cs[j-1].Created); j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

func active(cs []*credential) []*credential {
	out := cs[:0:0]
	for _, c := range cs {
		if c.Revoked == nil {
			out = append(out, c)
		}
	}
	return out
}

// loadCredential reads the credential id, from the cache when it holds it
// (credcache.go).
func (s *Service) loadCredential(ctx context.Context, id []byte) (*credential, error) {
	var gen uint64
	if s.creds != nil {
		if c, ok := s.creds.getID(id); ok {
			if c == nil {
				return nil, store.ErrNotFound
			}
			return c, nil
		}
		gen = s.creds.generation()
	}
	var c *credential
	err := s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		c, err = getCredential(tx, id)
		return err
	})
	if s.creds != nil && (err == nil || errors.Is(err, store.ErrNotFound)) {
		s.creds.putID(gen, id, c)
	}
	return c, err
}

// loadOwnerCredentials reads owner's credentials of rpID ("" every RP),
// from the cache when it holds them.
func (s *Service) loadOwnerCredentials(ctx context.Context, owner enclave.Owner, rpID string) ([]*credential, error) {
	var gen uint64
	if s.creds != nil {
		if cs, ok := s.creds.getOwner(owner, rpID); ok {
			return cs, nil
		}
		gen = s.creds.generation()
	}
	var cs []*credential
	err := s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		cs, err = ownerCredentials(tx, owner, rpID)
		return err
	})
	if err == nil && s.creds != nil {
		s.creds.putOwner(gen, owner, rpID, cs)
	}
	return cs, err
}

// wroteCredentials follows every write of owner's credentials ids,
// finished or failed: the cache reads them from the store again.
func (s *Service) wroteCredentials(owner enclave.Owner, ids ...[]byte) {
	if s.creds != nil {
		s.creds.invalidate(owner, ids...)
	}
}
