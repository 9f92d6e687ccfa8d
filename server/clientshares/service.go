package clientshares

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// Methods are the backup methods a client share can be stored under.
var Methods = []string{"PASSWORD", "PASSKEY", "GDRIVE", "ICLOUD", "FIREBASE"}

// MaxCipherTextBytes is the largest cipherText accepted (the server's body
// limit applies too).
const MaxCipherTextBytes = 64 << 10

// bindingKind is the enclave binding kind of a sealed client share.
const bindingKind = "client_share"

// priorKind is the binding kind of a prior version: sealed again under its
// own kind, so a prior record copied over the current one does not open as
// the current share. Only RestoreVersion (audited) brings it back.
const priorKind = "client_share_prior"

// Errors. Each is an *apierr.Error; callers branch with errors.Is.
var (
	// ErrBadMethod: the method is not one of [Methods].
	ErrBadMethod = apierr.New(http.StatusBadRequest, "invalid_method",
		"method must be one of PASSWORD, PASSKEY, GDRIVE, ICLOUD, FIREBASE")
	// ErrNotFound: nothing is stored for the owner and method. It matches
	// apierr.ErrNotFound.
	ErrNotFound = apierr.ErrNotFound.WithMessage("no client share is stored for this user and method")
	// ErrVersionNotFound: no prior version with that id.
	ErrVersionNotFound = store.ErrVersionNotFound
	// ErrEmptyCipherText: the cipherText is missing or empty.
	ErrEmptyCipherText = apierr.New(http.StatusBadRequest, "invalid_cipher_text", "cipherText must be a non-empty string")
	// ErrCipherTextTooLarge: the cipherText is over [MaxCipherTextBytes].
	ErrCipherTextTooLarge = apierr.ErrTooLarge.WithMessage("cipherText must be at most %d bytes", MaxCipherTextBytes)
)

// ValidMethod accepts the names in [Methods], exactly as written.
func ValidMethod(m string) error {
	for _, x := range Methods {
		if m == x {
			return nil
		}
	}
	return ErrBadMethod
}

// validCipherText checks a cipherText's length and encoding.
func validCipherText(ct string) error {
	switch {
	case ct == "":
		return ErrEmptyCipherText
	case len(ct) > MaxCipherTextBytes:
		return ErrCipherTextTooLarge
	case !utf8.ValidString(ct):
		return ErrEmptyCipherText.WithMessage("cipherText must be valid UTF-8 text")
	}
	return nil
}

// record is one stored share; only Sealed holds the cipherText.
type record struct {
	Stored   bool      `json:"st"`
	Created  time.Time `json:"c"`
	Updated  time.Time `json:"u"`           // when the cipherText was written
	StatusAt time.Time `json:"sa,omitzero"` // when stored was last set by the status route
	Sealed   []byte    `json:"s"`           // enclave record (binding kind client_share)
}

// Info describes a stored share without its cipherText.
type Info struct {
	Method          string    `json:"method"`
	Stored          bool      `json:"stored"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
	StatusUpdatedAt time.Time `json:"statusUpdatedAt,omitzero"`
	Version         uint64    `json:"version"` // write version of the sealed record
}

// Share is a stored share with its cipherText.
type Share struct {
	Info
	CipherText secret.String
}

// VersionInfo describes a prior value kept after an overwrite.
type VersionInfo struct {
	ID         string    `json:"id"`
	Method     string    `json:"method"`
	Stored     bool      `json:"stored"`
	ReplacedAt time.Time `json:"replacedAt"`
	CreatedAt  time.Time `json:"createdAt"`
}

// Options configure [New].
type Options struct {
	// DB is the store. Required.
	DB *store.DB
	// Root seals the records. Required (the appliance is unsealed).
	Root *enclave.Root
	// VersionRetention is how long a replaced share is kept as a prior
	// version (decisions/03), so an overwrite never destroys the only copy.
	// Zero means 30 days; negative keeps none.
	VersionRetention time.Duration
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
}

// Store keeps client shares in store.BucketClientShares.
type Store struct {
	db       *store.DB
	root     *enclave.Root
	versions store.Versions // client_shares, with the retention time
	now      func() time.Time
}

// New returns the client-share store.
func New(opts Options) (*Store, error) {
	if opts.DB == nil || opts.Root == nil {
		return nil, errors.New("clientshares: DB and Root are required")
	}
	if opts.VersionRetention == 0 {
		opts.VersionRetention = 30 * 24 * time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	s := &Store{db: opts.DB, root: opts.Root, versions: store.ClientShareVersions(opts.VersionRetention), now: opts.Clock}
	if err := s.sealLegacyPriors(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// sealLegacyPriors seals again, as priorKind, every prior version an older
// build kept as a verbatim copy of the current record (sealed as
// client_share), once per store (store.MetaClientSharesPriorsSealed). A
// record that opens under neither kind is left as it is (its restore
// reports it damaged).
func (s *Store) sealLegacyPriors(ctx context.Context) error {
	if done, err := s.db.HasMeta(ctx, store.MetaClientSharesPriorsSealed); err != nil || done {
		return err
	}
	return s.db.Update(ctx, func(tx *store.Tx) error {
		if _, err := tx.GetMeta(store.MetaClientSharesPriorsSealed); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		_, err := s.versions.RewritePriors(tx, func(o, method, _ string, v []byte) ([]byte, error) {
			owner := enclave.Owner(o)
			rec, err := decode(v)
			if err != nil {
				return nil, nil
			}
			if _, err := s.root.Open(priorBinding(owner, method, 0), rec.Sealed); err == nil {
				return nil, nil
			}
			pt, err := s.root.Open(binding(owner, method, 0), rec.Sealed)
			if err != nil {
				return nil, nil
			}
			ver, _ := enclave.RecordVersion(rec.Sealed)
			rec.Sealed, err = s.root.Seal(priorBinding(owner, method, ver), pt)
			clear(pt)
			if err != nil {
				return nil, err
			}
			return json.Marshal(rec)
		})
		if err != nil {
			return err
		}
		return tx.PutMeta(store.MetaClientSharesPriorsSealed, []byte("1"))
	})
}

// priorOf is what the versions hold for the replaced record old: its share
// sealed again as priorKind. A current record that opens only as a prior
// (one copied back over the current) is kept as it is, and so is one that
// opens under neither kind, so an overwrite or restore can repair the slot.
func (s *Store) priorOf(owner enclave.Owner, method string, old []byte, prev record) ([]byte, error) {
	pt, err := s.root.Open(binding(owner, method, 0), prev.Sealed)
	if errors.Is(err, enclave.ErrOpen) {
		return old, nil
	}
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	ver, _ := enclave.RecordVersion(prev.Sealed)
	prior := prev
	if prior.Sealed, err = s.root.Seal(priorBinding(owner, method, ver), pt); err != nil {
		return nil, err
	}
	return json.Marshal(prior)
}

// openPrior opens a prior version: sealed as priorKind, or (written by an
// older build and not yet migrated) as client_share.
func (s *Store) openPrior(owner enclave.Owner, method string, rec record) ([]byte, error) {
	pt, err := s.root.Open(priorBinding(owner, method, 0), rec.Sealed)
	if errors.Is(err, enclave.ErrOpen) {
		return s.root.Open(binding(owner, method, 0), rec.Sealed)
	}
	return pt, err
}

func checkOwnerMethod(owner enclave.Owner, method string) error {
	if err := owner.Validate(); err != nil {
		return err
	}
	return ValidMethod(method)
}

func binding(owner enclave.Owner, method string, version uint64) enclave.Binding {
	return enclave.Binding{Kind: bindingKind, Owner: owner, Method: method, Version: version}
}

func priorBinding(owner enclave.Owner, method string, version uint64) enclave.Binding {
	return enclave.Binding{Kind: priorKind, Owner: owner, Method: method, Version: version}
}

func decode(b []byte) (record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("clientshares: stored record damaged: %w", err)
	}
	return rec, nil
}

func (r record) info(method string) Info {
	v, _ := enclave.RecordVersion(r.Sealed)
	return Info{Method: method, Stored: r.Stored, CreatedAt: r.Created, UpdatedAt: r.Updated, StatusUpdatedAt: r.StatusAt, Version: v}
}

// Put seals cipherText and stores it for (owner, method), with stored as
// its confirmation status. An existing share is replaced and kept as a
// prior version; replaced says whether there was one.
func (s *Store) Put(ctx context.Context, owner enclave.Owner, method, cipherText string, stored bool) (info Info, replaced bool, err error) {
	if err := checkOwnerMethod(owner, method); err != nil {
		return Info{}, false, err
	}
	if err := validCipherText(cipherText); err != nil {
		return Info{}, false, err
	}
	now := s.now().UTC()
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		rec := record{Stored: stored, Created: now, Updated: now}
		if stored {
			rec.StatusAt = now
		}
		var err error
		info, replaced, err = s.putTx(tx, owner, method, rec, []byte(cipherText), now)
		return err
	})
	return info, replaced, err
}

// putTx seals pt into rec and writes it as the current record, keeping the
// one it replaces as a prior version. It is idempotent for group commits.
func (s *Store) putTx(tx *store.Tx, owner enclave.Owner, method string, rec record, pt []byte, now time.Time) (Info, bool, error) {
	version := uint64(1)
	old, err := s.versions.Get(tx, string(owner), method)
	replaced := err == nil
	switch {
	case replaced:
		prev, err := decode(old)
		if err != nil {
			return Info{}, false, err
		}
		v, _ := enclave.RecordVersion(prev.Sealed)
		version = v + 1
		rec.Created = prev.Created
		if _, err := s.versions.KeepPrior(tx, string(owner), method, now, func() ([]byte, error) {
			return s.priorOf(owner, method, old, prev)
		}); err != nil {
			return Info{}, false, err
		}
	case !errors.Is(err, store.ErrNotFound):
		return Info{}, false, err
	}
	sealed, err := s.root.Seal(binding(owner, method, version), pt)
	if err != nil {
		return Info{}, false, err
	}
	rec.Sealed = sealed
	b, err := json.Marshal(rec)
	if err != nil {
		return Info{}, false, err
	}
	if err := s.versions.Put(tx, string(owner), method, b); err != nil {
		return Info{}, false, err
	}
	return rec.info(method), replaced, nil
}

// Get opens the share of (owner, method). A record that does not open
// (altered, moved) is enclave.ErrOpen.
func (s *Store) Get(ctx context.Context, owner enclave.Owner, method string) (Share, error) {
	if err := checkOwnerMethod(owner, method); err != nil {
		return Share{}, err
	}
	var rec record
	err := s.db.View(ctx, func(tx *store.Tx) error {
		b, err := s.versions.Get(tx, string(owner), method)
		if err != nil {
			return err
		}
		rec, err = decode(b)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return Share{}, ErrNotFound
	}
	if err != nil {
		return Share{}, err
	}
	pt, err := s.root.Open(binding(owner, method, 0), rec.Sealed)
	if err != nil {
		return Share{}, err
	}
	return Share{Info: rec.info(method), CipherText: secret.NewString(string(pt))}, nil
}

// Info describes the share of (owner, method) without opening it.
func (s *Store) Info(ctx context.Context, owner enclave.Owner, method string) (Info, error) {
	if err := checkOwnerMethod(owner, method); err != nil {
		return Info{}, err
	}
	var info Info
	err := s.db.View(ctx, func(tx *store.Tx) error {
		b, err := s.versions.Get(tx, string(owner), method)
		if err != nil {
			return err
		}
		rec, err := decode(b)
		info = rec.info(method)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return Info{}, ErrNotFound
	}
	return info, err
}

// SetStored records whether the client confirmed it stored the backup. The
// cipherText is untouched and no prior version is made.
func (s *Store) SetStored(ctx context.Context, owner enclave.Owner, method string, stored bool) (Info, error) {
	if err := checkOwnerMethod(owner, method); err != nil {
		return Info{}, err
	}
	now := s.now().UTC()
	var info Info
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		b, err := s.versions.Get(tx, string(owner), method)
		if err != nil {
			return err
		}
		rec, err := decode(b)
		if err != nil {
			return err
		}
		rec.Stored, rec.StatusAt = stored, now
		nb, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		info = rec.info(method)
		return s.versions.Put(tx, string(owner), method, nb)
	})
	if errors.Is(err, store.ErrNotFound) {
		return Info{}, ErrNotFound
	}
	return info, err
}

// List describes every share of owner, ordered by method.
func (s *Store) List(ctx context.Context, owner enclave.Owner) ([]Info, error) {
	if err := owner.Validate(); err != nil {
		return nil, err
	}
	var out []Info
	err := s.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return s.versions.ForEachCurrent(tx, string(owner), func(method string, v []byte) error {
			rec, err := decode(v)
			if err != nil {
				return err
			}
			out = append(out, rec.info(method))
			return nil
		})
	})
	return out, err
}

// Delete removes the share of (owner, method) and its prior versions.
func (s *Store) Delete(ctx context.Context, owner enclave.Owner, method string) error {
	if err := checkOwnerMethod(owner, method); err != nil {
		return err
	}
	found := false
	err := s.db.Update(ctx, func(tx *store.Tx) (err error) {
		found, err = s.versions.Delete(tx, string(owner), method)
		return err
	})
	if err == nil && !found {
		return ErrNotFound
	}
	return err
}

// DeleteOwner removes every share and prior version of owner and returns
// how many current shares there were.
func (s *Store) DeleteOwner(ctx context.Context, owner enclave.Owner) (int, error) {
	if err := owner.Validate(); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.Update(ctx, func(tx *store.Tx) (err error) {
		n, err = s.versions.DeleteOwner(tx, string(owner))
		return err
	})
	return n, err
}

// ListVersions lists the prior values of (owner, method), oldest first.
func (s *Store) ListVersions(ctx context.Context, owner enclave.Owner, method string) ([]VersionInfo, error) {
	if err := checkOwnerMethod(owner, method); err != nil {
		return nil, err
	}
	var out []VersionInfo
	err := s.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return s.versions.List(tx, string(owner), method, func(id string, replacedAt time.Time, v []byte) error {
			rec, err := decode(v)
			if err != nil {
				return err
			}
			out = append(out, VersionInfo{ID: id, Method: method, Stored: rec.Stored, ReplacedAt: replacedAt, CreatedAt: rec.Created})
			return nil
		})
	})
	return out, err
}

// RestoreVersion makes prior version id the current share again (with the
// confirmation status it had); the share it replaces becomes a prior
// version in turn. The old record must open, so a damaged one is never
// made current.
func (s *Store) RestoreVersion(ctx context.Context, owner enclave.Owner, method, id string) (Info, error) {
	if err := checkOwnerMethod(owner, method); err != nil {
		return Info{}, err
	}
	if err := store.CheckVersionID(id); err != nil {
		return Info{}, err
	}
	now := s.now().UTC()
	var info Info
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		// Taken out of the versions; undone with the transaction when the
		// record does not open.
		b, err := s.versions.TakePrior(tx, string(owner), method, id)
		if err != nil {
			return err
		}
		old, err := decode(b)
		if err != nil {
			return err
		}
		pt, err := s.openPrior(owner, method, old)
		if err != nil {
			return err
		}
		defer clear(pt)
		rec := record{Stored: old.Stored, Created: now, Updated: now, StatusAt: old.StatusAt}
		info, _, err = s.putTx(tx, owner, method, rec, pt, now)
		return err
	})
	return info, err
}
