package enclave

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// Owner names whose key it is: "user:<id>" (session-token and passkey
// users), "firebase:<project>/<tenant>/<sub>", "portal:<clientId>".
type Owner string

// Validate refuses owners that cannot be stored safely.
func (o Owner) Validate() error {
	s := string(o)
	if len(s) < 3 || len(s) > 512 || !utf8.ValidString(s) || strings.ContainsRune(s, 0) || !strings.Contains(s, ":") {
		return apierr.ErrBadRequest.WithMessage("invalid owner identifier")
	}
	return nil
}

// UserOwner is the owner of a user id vouched for by the customer's backend.
func UserOwner(userID string) Owner { return Owner("user:" + userID) }

// kindPrior is the record kind of prior values kept after an overwrite.
const kindPrior = "key_prior"

// Key formats (decisions/02): the native API stores bytes, the Portal
// adapter the SDK's string as given.
const (
	FormatBytes = "bytes"
	FormatText  = "text"
)

// Key limits.
const (
	MinKeyBytes = 1
	MaxKeyBytes = 1024
)

var (
	errKeyNotFound  = apierr.ErrNotFound.WithMessage("no key is stored for this user and method")
	errBadKeyLength = apierr.New(400, "invalid_key", fmt.Sprintf("the key must be %d to %d bytes", MinKeyBytes, MaxKeyBytes))
)

// keyRecord is the stored envelope of one key; only Sealed is secret. It is
// stored in the binary form of encodeKeyRecord; the JSON tags are the form
// earlier builds wrote, still read (decisions/54).
type keyRecord struct {
	Format   string    `json:"f"`
	Created  time.Time `json:"c"`
	Updated  time.Time `json:"u"`
	ClientID string    `json:"cid,omitempty"`
	// ClaimBy marks a key brought in by the admin import that no passkey
	// has claimed yet, with the claim deadline. It is not part of the
	// sealed value or its additional data (the sealed format is unchanged);
	// records without it (every record of earlier builds) are claimed.
	ClaimBy *time.Time `json:"cb,omitempty"`
	Sealed  []byte     `json:"s"`
}

// KeyInfo describes a stored key without its value.
type KeyInfo struct {
	Method   string    `json:"method"`
	Format   string    `json:"format"`
	Created  time.Time `json:"createdAt"`
	Updated  time.Time `json:"updatedAt"`
	ClientID string    `json:"clientId,omitempty"`
	Version  uint64    `json:"version"`
	// ClaimDeadline is set while the key is an unclaimed import (see
	// [PutOptions.ClaimDeadline]); past it, nothing claims the key.
	ClaimDeadline *time.Time `json:"claimDeadline,omitempty"`
}

// VersionInfo describes a prior value kept after an overwrite.
type VersionInfo struct {
	ID         string    `json:"id"`
	Method     string    `json:"method"`
	ReplacedAt time.Time `json:"replacedAt"`
	Created    time.Time `json:"createdAt"`
}

// CustodyOptions configure NewCustody.
type CustodyOptions struct {
	// VersionRetention is how long a prior value is kept after an
	// overwrite (decisions/03). Zero means 30 days; negative keeps none.
	VersionRetention time.Duration
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
}

// Custody stores and releases users' keys.
type Custody struct {
	db        *store.DB
	root      *Root
	versions  store.Versions // keys and key_versions, with the retention time
	now       func() time.Time
	isolation atomic.Bool // see SetClientIsolation
}

// Access names who acts on a key, for the client isolation rule.
type Access struct {
	// ClientID is the Portal client acting; empty for the native routes
	// (and for any caller that carries no client id). For an owner
	// "portal:<clientId>" the owner itself names the acting client.
	ClientID string
}

// acting is the client that acts on owner's record.
func (a Access) acting(owner Owner) string {
	if a.ClientID != "" {
		return a.ClientID
	}
	if id, ok := strings.CutPrefix(string(owner), "portal:"); ok {
		return id
	}
	return ""
}

// SetClientIsolation turns the client isolation rule on or off (the Portal
// drop-in turns it on with portal.client_mismatch: refuse). With the rule
// on, a key that carries a client id (stored through a Portal client) is
// released, replaced and deleted only for that client: another client, and
// the native routes (no client id), get ErrClientMismatch. Keys without a
// client id are open to every caller, as before. The rule is checked here,
// on the record read or written, in every path (LookupAs, PutKey,
// DeleteKeyKeepingPrior), so no route can skip it. The admin's restore,
// purge and user deletion are not subject to it.
func (c *Custody) SetClientIsolation(on bool) { c.isolation.Store(on) }

// ClientIsolation reports whether the client isolation rule is on.
func (c *Custody) ClientIsolation() bool { return c.isolation.Load() }

// allowed applies the client isolation rule to a record stored with
// recordClient.
func (c *Custody) allowed(owner Owner, recordClient string, acc Access) bool {
	return recordClient == "" || !c.isolation.Load() || recordClient == acc.acting(owner)
}

// CheckAccess applies the client isolation rule to a key described by
// info (nil: no key), for an early answer before any audit line or write.
// The operations check it again on the record they act on.
func (c *Custody) CheckAccess(owner Owner, info *KeyInfo, acc Access) error {
	if info != nil && !c.allowed(owner, info.ClientID, acc) {
		return ErrClientMismatch
	}
	return nil
}

// NewCustody returns the key custody over db with the unsealed root.
func NewCustody(db *store.DB, root *Root, opts CustodyOptions) *Custody {
	if opts.VersionRetention == 0 {
		opts.VersionRetention = 30 * 24 * time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &Custody{db: db, root: root, versions: store.KeyVersions(opts.VersionRetention), now: opts.Clock}
}

// Root returns the unsealed root key (for subkeys).
func (c *Custody) Root() *Root { return c.root }

// PutOptions modify PutKey. The zero value overwrites and stores bytes.
type PutOptions struct {
	// NoOverwrite refuses to replace a stored key with apierr.ErrKeyExists.
	NoOverwrite bool
	// Format is FormatBytes (default) or FormatText.
	Format string
	// ClientID records the Portal client that stored the key (kept from
	// the first store).
	ClientID string
	// SameClientOnly refuses, inside the write transaction, to replace a
	// key first stored by another client id (ErrClientMismatch): two
	// clients racing to store the same new user's key cannot both win.
	// With the client isolation rule on (SetClientIsolation) this holds
	// for every store, with ClientID as the acting client.
	SameClientOnly bool
	// ClaimDeadline, when not zero, marks the stored key as an unclaimed
	// import until then: the first passkey registered for its owner with a
	// session token alone may claim it ([Custody.ClaimKeyTx]). It is set
	// only when no key is stored or the replaced key is itself unclaimed
	// (a new import renews the window); over a claimed key, or one never
	// imported, the new value is stored unmarked, so that an admin import
	// never opens a stored key to a new passkey. A put without it clears
	// the mark.
	ClaimDeadline time.Time

	operator bool // the admin's restore: not subject to client isolation
}

// VersionIDLen is the length of a prior version's id: the time it was
// replaced, in Unix nanoseconds, as 20 decimal digits ([store.VersionID]).
const VersionIDLen = store.VersionIDLen

// ErrBadVersionID refuses a version id that is not one a version list gives.
var ErrBadVersionID = store.ErrBadVersionID

// CheckVersionID accepts exactly the ids the version lists give (keys,
// custodian shares, client shares): 20 ASCII digits that fit in an int64.
// Every restore checks it before it touches the store.
func CheckVersionID(id string) error { return store.CheckVersionID(id) }

// Claim refusals of [Custody.ClaimKeyTx].
var (
	// ErrNotClaimable: no key, or a key that is not an unclaimed import.
	ErrNotClaimable = errors.New("enclave: the key is not an unclaimed import")
	// ErrClaimExpired: the claim deadline has passed.
	ErrClaimExpired = errors.New("enclave: the claim deadline of the imported key has passed")
)

// ErrClientMismatch refuses a store over a key another client stored.
var ErrClientMismatch = apierr.New(403, "client_mismatch", "this key was stored through another client")

func validMethod(m string) error {
	if m == "" || len(m) > 64 || strings.ContainsRune(m, 0) || !utf8.ValidString(m) {
		return apierr.ErrBadRequest.WithMessage("invalid method name")
	}
	return nil
}

// PutKey seals key for (owner, method) and stores it durably. An existing
// key is replaced unless opts.NoOverwrite; the replaced value is kept as a
// prior version for the retention time.
func (c *Custody) PutKey(ctx context.Context, owner Owner, method string, key []byte, opts PutOptions) (replaced bool, err error) {
	err = c.db.Update(ctx, func(tx *store.Tx) error {
		var err error
		replaced, err = c.PutKeyTx(tx, owner, method, key, opts)
		return err
	})
	return replaced, err
}

// PutKeyTx is PutKey inside the caller's write transaction, so a key can
// be stored atomically with other records (a passkey credential and its
// key). Like every Update function it may run more than once.
func (c *Custody) PutKeyTx(tx *store.Tx, owner Owner, method string, key []byte, opts PutOptions) (replaced bool, err error) {
	if err := owner.Validate(); err != nil {
		return false, err
	}
	if err := validMethod(method); err != nil {
		return false, err
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return false, errBadKeyLength
	}
	if opts.Format == "" {
		opts.Format = FormatBytes
	}
	now := c.now().UTC()
	rec := keyRecord{Format: opts.Format, Created: now, Updated: now, ClientID: opts.ClientID}
	if !opts.ClaimDeadline.IsZero() {
		d := opts.ClaimDeadline.UTC()
		rec.ClaimBy = &d
	}
	version := uint64(1)
	old, err := c.versions.Get(tx, string(owner), method)
	switch {
	case err == nil:
		if opts.NoOverwrite {
			return false, apierr.ErrKeyExists
		}
		prev, err := decodeKeyRecord(old)
		if err != nil {
			return false, fmt.Errorf("enclave: stored key record damaged: %w", err)
		}
		if opts.SameClientOnly && prev.ClientID != "" && prev.ClientID != opts.ClientID {
			return false, ErrClientMismatch
		}
		if !opts.operator && !c.allowed(owner, prev.ClientID, Access{ClientID: opts.ClientID}) {
			return false, ErrClientMismatch
		}
		v, _ := RecordVersion(prev.Sealed)
		version = v + 1
		rec.Created = prev.Created
		if prev.ClientID != "" {
			rec.ClientID = prev.ClientID
		}
		if prev.ClaimBy == nil {
			// Claimed, or never imported: passkeys may already reach this
			// owner's key, and a new import must not let a session token
			// bind another one (which would then reach this value's prior
			// version once an admin restores it).
			rec.ClaimBy = nil
		}
		if _, err := c.versions.KeepPrior(tx, string(owner), method, now, func() ([]byte, error) {
			return c.priorOf(owner, method, old, prev)
		}); err != nil {
			return false, err
		}
		replaced = true
	case !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	sealed, err := c.root.Seal(Binding{Kind: "key", Owner: owner, Method: method, Version: version}, key)
	if err != nil {
		return false, err
	}
	rec.Sealed = sealed
	b, err := encodeKeyRecord(rec)
	if err != nil {
		return false, err
	}
	return replaced, c.versions.Put(tx, string(owner), method, b)
}

// priorOf is what the versions keep of prev (stored as old), the value
// of (owner, method) being replaced: its value sealed again as kind
// "key_prior", so it does not open if copied back into the keys bucket:
// only RestoreVersion (audited) brings it back. A current record that does
// not open as a key (a prior copied back over it, or a damaged one) is
// kept as it is, so an overwrite or a restore can repair the slot.
func (c *Custody) priorOf(owner Owner, method string, old []byte, prev keyRecord) ([]byte, error) {
	pt, err := c.root.Open(Binding{Kind: "key", Owner: owner, Method: method}, prev.Sealed)
	if errors.Is(err, ErrOpen) {
		return old, nil
	}
	if err != nil {
		return nil, err
	}
	v, _ := RecordVersion(prev.Sealed)
	prior := prev
	prior.ClaimBy = nil
	prior.Sealed, err = c.root.Seal(Binding{Kind: kindPrior, Owner: owner, Method: method, Version: v}, pt)
	clear(pt)
	if err != nil {
		return nil, err
	}
	return encodeKeyRecord(prior)
}

// ClaimKeyTx claims the unclaimed import stored for (owner, method) inside
// the caller's write transaction: it clears the mark, leaving the sealed
// value as it is. It refuses with ErrNotClaimable when no key is stored or
// the key is not an unclaimed import, and with ErrClaimExpired when now is
// at or past the deadline.
func (c *Custody) ClaimKeyTx(tx *store.Tx, owner Owner, method string, now time.Time) error {
	b, err := c.versions.Get(tx, string(owner), method)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotClaimable
	}
	if err != nil {
		return err
	}
	rec, err := decodeKeyRecord(b)
	if err != nil {
		return fmt.Errorf("enclave: stored key record damaged: %w", err)
	}
	if rec.ClaimBy == nil {
		return ErrNotClaimable
	}
	if !now.Before(*rec.ClaimBy) {
		return ErrClaimExpired
	}
	rec.ClaimBy = nil
	nb, err := encodeKeyRecord(rec)
	if err != nil {
		return err
	}
	return c.versions.Put(tx, string(owner), method, nb)
}

// GetKey opens the key stored for (owner, method). It reads the store and
// makes no TPM command and no write.
func (c *Custody) GetKey(ctx context.Context, owner Owner, method string) (secret.Bytes, error) {
	k, _, err := c.Lookup(ctx, owner, method)
	return k, err
}

// Lookup is GetKey with the key's description, for a caller that carries
// no client id (LookupAs with the zero Access).
func (c *Custody) Lookup(ctx context.Context, owner Owner, method string) (secret.Bytes, *KeyInfo, error) {
	return c.LookupAs(ctx, owner, method, Access{})
}

// LookupAs opens the key of (owner, method) for acc: with the client
// isolation rule on, a key stored through another client (or through any
// client, for a caller without one) is ErrClientMismatch and is not opened.
func (c *Custody) LookupAs(ctx context.Context, owner Owner, method string, acc Access) (secret.Bytes, *KeyInfo, error) {
	var rec keyRecord
	err := c.db.View(ctx, func(tx *store.Tx) error {
		b, err := c.versions.Get(tx, string(owner), method)
		if err != nil {
			return err
		}
		rec, err = decodeKeyRecord(b)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return secret.Bytes{}, nil, errKeyNotFound
	}
	if err != nil {
		return secret.Bytes{}, nil, err
	}
	if !c.allowed(owner, rec.ClientID, acc) {
		return secret.Bytes{}, nil, ErrClientMismatch
	}
	pt, err := c.root.Open(Binding{Kind: "key", Owner: owner, Method: method}, rec.Sealed)
	if err != nil {
		return secret.Bytes{}, nil, err
	}
	v, _ := RecordVersion(rec.Sealed)
	return secret.NewBytes(pt), rec.info(method, v), nil
}

// HasKey reports whether a key is stored for (owner, method).
func (c *Custody) HasKey(ctx context.Context, owner Owner, method string) (bool, error) {
	_, err := c.Info(ctx, owner, method)
	if errors.Is(err, apierr.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// HasKeyTx is HasKey inside the caller's transaction.
func (c *Custody) HasKeyTx(tx *store.Tx, owner Owner, method string) (bool, error) {
	_, err := c.versions.Get(tx, string(owner), method)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Info describes the key stored for (owner, method) without opening it.
func (c *Custody) Info(ctx context.Context, owner Owner, method string) (*KeyInfo, error) {
	var info *KeyInfo
	err := c.db.View(ctx, func(tx *store.Tx) error {
		b, err := c.versions.Get(tx, string(owner), method)
		if err != nil {
			return err
		}
		info, err = describe(method, b)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errKeyNotFound
	}
	return info, err
}

func describe(method string, b []byte) (*KeyInfo, error) {
	rec, err := decodeKeyRecord(b)
	if err != nil {
		return nil, fmt.Errorf("enclave: stored key record damaged: %w", err)
	}
	v, _ := RecordVersion(rec.Sealed)
	return rec.info(method, v), nil
}

func (rec *keyRecord) info(method string, version uint64) *KeyInfo {
	return &KeyInfo{Method: method, Format: rec.Format, Created: rec.Created, Updated: rec.Updated, ClientID: rec.ClientID,
		Version: version, ClaimDeadline: rec.ClaimBy}
}

// ListKeys describes every key of owner.
func (c *Custody) ListKeys(ctx context.Context, owner Owner) ([]KeyInfo, error) {
	var out []KeyInfo
	err := c.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return c.versions.ForEachCurrent(tx, string(owner), func(method string, v []byte) error {
			info, err := describe(method, v)
			if err != nil {
				return err
			}
			out = append(out, *info)
			return nil
		})
	})
	return out, err
}

// DeleteKey removes the key of (owner, method) and its prior versions at
// once: for the passkey reset, which must destroy the key (a prior version
// restored later would be released to the new passkey). User-facing
// deletes use DeleteKeyKeepingPrior.
func (c *Custody) DeleteKey(ctx context.Context, owner Owner, method string) error {
	found := false
	err := c.db.Update(ctx, func(tx *store.Tx) (err error) {
		found, err = c.versions.Delete(tx, string(owner), method)
		return err
	})
	if err == nil && !found {
		return errKeyNotFound
	}
	return err
}

// DeleteKeyTx is DeleteKey inside the caller's write transaction (the key
// and every prior version purged, so that nothing restores it), reporting
// whether a key was there: a PIN registration that ran out of guesses and
// its key go in one commit (server/pin).
func (c *Custody) DeleteKeyTx(tx *store.Tx, owner Owner, method string) (bool, error) {
	return c.versions.Delete(tx, string(owner), method)
}

// DeleteKeyKeepingPrior removes the current key of (owner, method) and
// keeps its value as a prior version (a tombstone, sealed as key_prior)
// for the retention time, listed and restorable by the admin like one
// replaced by an overwrite: a stolen token cannot erase a key's history.
// Only DeleteOwner (the admin's user deletion) and DeleteKey purge at once.
//
// With the client isolation rule on, a key stored through another client
// (or through any client, for acc without one) is ErrClientMismatch.
func (c *Custody) DeleteKeyKeepingPrior(ctx context.Context, owner Owner, method string, acc Access) error {
	found := false
	err := c.db.Update(ctx, func(tx *store.Tx) error {
		old, err := c.versions.Get(tx, string(owner), method)
		found = err == nil
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		prev, err := decodeKeyRecord(old)
		if err != nil {
			return fmt.Errorf("enclave: stored key record damaged: %w", err)
		}
		if !c.allowed(owner, prev.ClientID, acc) {
			return ErrClientMismatch
		}
		return c.versions.DeleteKeepingPrior(tx, string(owner), method, c.now().UTC(), func() ([]byte, error) {
			return c.priorOf(owner, method, old, prev)
		})
	})
	if err == nil && !found {
		return errKeyNotFound
	}
	return err
}

// DeleteOwner removes every key and prior version of owner and returns how
// many keys there were.
func (c *Custody) DeleteOwner(ctx context.Context, owner Owner) (int, error) {
	var n int
	err := c.db.Update(ctx, func(tx *store.Tx) (err error) {
		n, err = c.versions.DeleteOwner(tx, string(owner))
		return err
	})
	return n, err
}

// ListVersions lists the prior values of (owner, method), oldest first.
func (c *Custody) ListVersions(ctx context.Context, owner Owner, method string) ([]VersionInfo, error) {
	var out []VersionInfo
	err := c.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return c.versions.List(tx, string(owner), method, func(id string, replacedAt time.Time, v []byte) error {
			rec, err := decodeKeyRecord(v)
			if err != nil {
				return fmt.Errorf("enclave: prior key record damaged: %w", err)
			}
			out = append(out, VersionInfo{ID: id, Method: method, ReplacedAt: replacedAt, Created: rec.Created})
			return nil
		})
	})
	return out, err
}

// RestoreVersion makes prior version id the current key again; the value
// it replaces becomes a prior version in turn, and the restored one stays
// listed. A malformed id is ErrBadVersionID before the store is read.
func (c *Custody) RestoreVersion(ctx context.Context, owner Owner, method, id string) error {
	var old secret.Bytes
	var format, clientID string
	err := c.db.View(ctx, func(tx *store.Tx) error {
		b, err := c.versions.Prior(tx, string(owner), method, id)
		if err != nil {
			return err
		}
		rec, err := decodeKeyRecord(b)
		if err != nil {
			return fmt.Errorf("enclave: prior key record damaged: %w", err)
		}
		pt, err := c.root.Open(Binding{Kind: kindPrior, Owner: owner, Method: method}, rec.Sealed)
		if errors.Is(err, ErrOpen) {
			// Kept by a build from before prior values had their own kind.
			pt, err = c.root.Open(Binding{Kind: "key", Owner: owner, Method: method}, rec.Sealed)
		}
		if err != nil {
			return err
		}
		old, format, clientID = secret.NewBytes(pt), rec.Format, rec.ClientID
		return nil
	})
	if err != nil {
		return err
	}
	defer old.Wipe()
	// The client id the value was stored with comes back with it (after
	// a delete there is no current record to keep it).
	_, err = c.PutKey(ctx, owner, method, old.Reveal(), PutOptions{Format: format, ClientID: clientID, operator: true})
	return err
}
