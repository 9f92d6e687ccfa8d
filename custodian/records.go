package custodian

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/store"
)

// priorKind is the enclave binding kind under which a prior version's
// Transit ciphertext is sealed: a prior record copied over the current one
// holds no ciphertext the current path reads, so it does not open as the
// current share. Only RestoreVersion (audited) brings it back.
const priorKind = "custodian_prior"

// errPriorInCurrent: the current slot holds a sealed prior version (copied
// there); it is not a current share.
var errPriorInCurrent = apierr.New(http.StatusInternalServerError, "record_damaged",
	"the stored record does not open; an operator has been told").Wrap(enclave.ErrOpen)

// record is what BucketCustodian holds for a share: only the Transit
// ciphertext, never the share. A prior version holds the ciphertext sealed
// under the root key as priorKind in Sealed, and no Ciphertext.
type record struct {
	Ciphertext string    `json:"ciphertext"`
	KeyVersion int       `json:"keyVersion"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	Sealed     []byte    `json:"sealed,omitempty"`
}

func (r record) info(method string) ShareInfo {
	return ShareInfo{Method: method, KeyVersion: r.KeyVersion, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

func decodeRecord(b []byte) (record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("custodian: stored record damaged: %w", err)
	}
	return rec, nil
}

// RecordsOptions configure [NewRecords]. The zero value is usable.
type RecordsOptions struct {
	// VersionRetention is how long a replaced share is kept as a prior
	// version. Zero means 30 days; negative keeps none.
	VersionRetention time.Duration
	// Root seals prior versions as priorKind (see [ServiceOptions.Root]).
	Root *enclave.Root
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
}

// Records is the storage of custodian shares, apart from the Vault client:
// the records [Service] writes after Vault wrapped a share, which can be
// described, listed, restored and deleted without Vault (a user deletion
// never waits for Vault). Nothing else touches store.BucketCustodian but
// the rewrap job.
//
// # Records
//
//	custodian/
//	├── owner 0x00 method                            → {ciphertext, keyVersion, createdAt, updatedAt}
//	└── owner 0x00 method 0x00 "versions" 0x00 <ns>  → {sealed, keyVersion, createdAt, updatedAt}, the
//	                                                   value replaced at <ns> (20 digits), its ciphertext
//	                                                   sealed as custodian_prior (store.CustodianVersions)
type Records struct {
	db       *store.DB
	root     *enclave.Root
	versions store.Versions
	now      func() time.Time
}

// NewRecords returns the share records over db.
func NewRecords(db *store.DB, opts RecordsOptions) *Records {
	if opts.VersionRetention == 0 {
		opts.VersionRetention = 30 * 24 * time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &Records{db: db, root: opts.Root, versions: store.CustodianVersions(opts.VersionRetention), now: opts.Clock}
}

func priorBinding(owner, method string) enclave.Binding {
	return enclave.Binding{Kind: priorKind, Owner: enclave.Owner(owner), Method: method}
}

// transitCiphertext is the Transit ciphertext rec holds: a current
// record's own, a prior version's after opening its seal (or, written by
// an older build, its own).
func (r *Records) transitCiphertext(owner, method string, prior bool, rec record) (string, error) {
	switch {
	case !prior && rec.Sealed != nil, rec.Ciphertext == "" && rec.Sealed == nil:
		return "", errPriorInCurrent
	case rec.Sealed == nil:
		return rec.Ciphertext, nil
	case r.root == nil:
		return "", fmt.Errorf("custodian: a sealed prior version needs the root key: %w", enclave.ErrOpen)
	}
	pt, err := r.root.Open(priorBinding(owner, method), rec.Sealed)
	if err != nil {
		return "", err
	}
	return string(pt), nil
}

// withCiphertext sets ct as rec's ciphertext the way its slot keeps it:
// sealed as priorKind for a prior version (when the root key is there).
func (r *Records) withCiphertext(owner, method string, prior bool, rec record, ct string) (record, error) {
	if !prior || r.root == nil {
		rec.Ciphertext, rec.Sealed = ct, nil
		return rec, nil
	}
	sealed, err := r.root.Seal(priorBinding(owner, method), []byte(ct))
	if err != nil {
		return rec, err
	}
	rec.Ciphertext, rec.Sealed = "", sealed
	return rec, nil
}

// sealLegacyPriors seals, as priorKind, every prior version an older build
// kept as a plain ciphertext record, once per store (store.MetaCustodianPriorsSealed).
func (r *Records) sealLegacyPriors(ctx context.Context) (int, error) {
	if done, err := r.db.HasMeta(ctx, store.MetaCustodianPriorsSealed); err != nil || done {
		return 0, err
	}
	var n int
	err := r.db.Update(ctx, func(tx *store.Tx) error {
		n = 0
		if _, err := tx.GetMeta(store.MetaCustodianPriorsSealed); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var err error
		n, err = r.versions.RewritePriors(tx, func(owner, method, _ string, v []byte) ([]byte, error) {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil || rec.Sealed != nil || rec.Ciphertext == "" {
				return nil, nil
			}
			rec, err := r.withCiphertext(owner, method, true, rec, rec.Ciphertext)
			if err != nil {
				return nil, err
			}
			return json.Marshal(rec)
		})
		if err != nil {
			return err
		}
		return tx.PutMeta(store.MetaCustodianPriorsSealed, []byte("1"))
	})
	return n, err
}

// get reads the current record of (owner, method); store.ErrNotFound when
// there is none.
func (r *Records) get(tx *store.Tx, owner, method string) (record, error) {
	b, err := r.versions.Get(tx, owner, method)
	if err != nil {
		return record{}, err
	}
	return decodeRecord(b)
}

// getRecord reads the record at k, current or prior: for the rewrap job,
// which walks the whole bucket in key order.
func getRecord(tx *store.Tx, k []byte) (record, error) {
	b, err := tx.Get(store.BucketCustodian, k)
	if err != nil {
		return record{}, err
	}
	return decodeRecord(b)
}

// putTx writes rec as the current record, keeping the one it replaces.
func (r *Records) putTx(tx *store.Tx, owner, method string, rec record, now time.Time) (bool, error) {
	old, err := r.versions.Get(tx, owner, method)
	replaced := err == nil
	switch {
	case replaced:
		prev, err := decodeRecord(old)
		if err != nil {
			return false, err
		}
		rec.CreatedAt = prev.CreatedAt
		if _, err := r.versions.KeepPrior(tx, owner, method, now, func() ([]byte, error) {
			if prev.Sealed != nil || prev.Ciphertext == "" {
				return old, nil // a prior copied over the current one: kept as it is
			}
			prior, err := r.withCiphertext(owner, method, true, prev, prev.Ciphertext)
			if err != nil {
				return nil, err
			}
			return json.Marshal(prior)
		}); err != nil {
			return false, err
		}
	case !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	return replaced, r.versions.Put(tx, owner, method, b)
}

// forEachCurrent calls fn for each current record of owner, by method.
func (r *Records) forEachCurrent(tx *store.Tx, owner string, fn func(method string, rec record) error) error {
	return r.versions.ForEachCurrent(tx, owner, func(method string, v []byte) error {
		rec, err := decodeRecord(v)
		if err != nil {
			return err
		}
		return fn(method, rec)
	})
}

// Info describes the share of (owner, method) without opening it.
func (r *Records) Info(ctx context.Context, owner, method string) (ShareInfo, error) {
	if err := validOwnerMethod(owner, method); err != nil {
		return ShareInfo{}, err
	}
	var rec record
	err := r.db.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = r.get(tx, owner, method)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return ShareInfo{}, ErrShareNotFound
	}
	if err != nil {
		return ShareInfo{}, err
	}
	return rec.info(method), nil
}

// Methods lists the methods owner has a current share for, in order,
// without decoding the records.
func (r *Records) Methods(ctx context.Context, owner string) ([]string, error) {
	if err := checkUserID(owner); err != nil {
		return nil, err
	}
	var out []string
	err := r.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return r.versions.ForEachCurrent(tx, owner, func(method string, _ []byte) error {
			out = append(out, method)
			return nil
		})
	})
	return out, err
}

// Delete removes the share of (owner, method) and its prior versions.
func (r *Records) Delete(ctx context.Context, owner, method string) error {
	if err := validOwnerMethod(owner, method); err != nil {
		return err
	}
	found := false
	err := r.db.Update(ctx, func(tx *store.Tx) (err error) {
		found, err = r.versions.Delete(tx, owner, method)
		return err
	})
	if err == nil && !found {
		return ErrShareNotFound
	}
	return err
}

// DeleteOwner removes every share and prior version of owner and returns
// how many current shares there were.
func (r *Records) DeleteOwner(ctx context.Context, owner string) (int, error) {
	if err := checkUserID(owner); err != nil {
		return 0, err
	}
	n := 0
	err := r.db.Update(ctx, func(tx *store.Tx) (err error) {
		n, err = r.versions.DeleteOwner(tx, owner)
		return err
	})
	return n, err
}

// ListVersions lists the prior values of (owner, method), oldest first.
func (r *Records) ListVersions(ctx context.Context, owner, method string) ([]VersionInfo, error) {
	if err := validOwnerMethod(owner, method); err != nil {
		return nil, err
	}
	var out []VersionInfo
	err := r.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return r.versions.List(tx, owner, method, func(id string, replacedAt time.Time, v []byte) error {
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			out = append(out, VersionInfo{ID: id, Method: method, KeyVersion: rec.KeyVersion,
				ReplacedAt: replacedAt, CreatedAt: rec.CreatedAt})
			return nil
		})
	})
	return out, err
}

// RestoreVersion makes prior version id the current share again; the
// share it replaces becomes a prior version in turn. The ciphertext is
// bound to the same owner, so no Vault call is needed.
func (r *Records) RestoreVersion(ctx context.Context, owner, method, id string) error {
	if err := validOwnerMethod(owner, method); err != nil {
		return err
	}
	if err := store.CheckVersionID(id); err != nil {
		return err
	}
	now := r.now().UTC()
	return r.db.Update(ctx, func(tx *store.Tx) error {
		// Taken out of the versions; undone with the transaction when the
		// record does not open.
		b, err := r.versions.TakePrior(tx, owner, method, id)
		if err != nil {
			return err
		}
		rec, err := decodeRecord(b)
		if err != nil {
			return err
		}
		ct, err := r.transitCiphertext(owner, method, true, rec)
		if err != nil {
			return err
		}
		rec.Ciphertext, rec.Sealed = ct, nil
		rec.UpdatedAt = now
		_, err = r.putTx(tx, owner, method, rec, now)
		return err
	})
}
