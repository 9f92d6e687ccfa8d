package store

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
)

// VersionIDLen is the length of a prior version's id.
const VersionIDLen = 20

// ErrBadVersionID refuses a version id that is not one a version list gives.
var ErrBadVersionID = apierr.New(400, "invalid_version_id", "a version id is the 20-digit number that the version list gives")

// ErrVersionNotFound: no prior version with that id. It matches
// apierr.ErrNotFound (not [ErrNotFound]).
var ErrVersionNotFound = apierr.ErrNotFound.WithMessage("no such prior version")

// VersionID is the id of a value replaced at t.
func VersionID(t time.Time) string { return fmt.Sprintf("%020d", t.UnixNano()) }

// CheckVersionID accepts exactly the ids [VersionID] makes: 20 ASCII
// digits that fit in an int64.
func CheckVersionID(id string) error {
	if len(id) != VersionIDLen {
		return ErrBadVersionID
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return ErrBadVersionID
		}
	}
	if _, err := strconv.ParseInt(id, 10, 64); err != nil {
		return ErrBadVersionID
	}
	return nil
}

// Client keys, custodian shares and client shares keep, besides their
// current value, every value an overwrite or a user's delete replaced, for
// a retention time, so that a mistaken or hostile overwrite never destroys
// the only copy. [Versions] is the one implementation of that: the key
// layout, the version id, listing, pruning, restoring and the delete that
// keeps a tombstone. Values are opaque here; the callers seal them (a prior
// value is sealed under its own kind so that it does not open if copied
// back over the current one).
//
//	Current bucket:  owner 0x00 method                     → current value
//	Prior bucket:    owner 0x00 method [0x00 Sub] 0x00 id  → a prior value
//
// The id is the time the value was replaced, in Unix nanoseconds, as 20
// decimal digits ([VersionID]); ids sort as their times, so a prefix scan
// lists prior values oldest first. Two replacements within one nanosecond
// (an overwrite and a delete in one commit) get distinct ids: the later
// one takes the next free nanosecond.
//
// The layouts in use ([KeyVersions], [CustodianVersions],
// [ClientShareVersions]):
//
//	keys/           owner 0x00 method                                → sealed key record
//	key_versions/   owner 0x00 method 0x00 id                        → prior key (sealed as key_prior)
//	custodian/      owner 0x00 method                                → Transit ciphertext record
//	                owner 0x00 method 0x00 "versions" 0x00 id        → prior (sealed as custodian_prior)
//	client_shares/  owner 0x00 method                                → sealed client share
//	                owner 0x00 method 0x00 "versions" 0x00 id        → prior (sealed as client_share_prior)
//
// A Versions value is one versioned-record layout with its retention time. The
// zero Retention (or a negative one) keeps no prior value.
type Versions struct {
	// Current holds the current values: owner 0x00 method.
	CurrentBucket Bucket
	// Prior holds the prior values; it may be Current itself, and then
	// Sub must be set so that no prior key is taken for a current one.
	PriorBucket Bucket
	// Sub is the key part between (owner, method) and the id; empty for
	// none.
	Sub string
	// Retention is how long a prior value is kept after it was replaced.
	Retention time.Duration
}

// KeyVersions is the layout of client keys (keys, key_versions).
func KeyVersions(retention time.Duration) Versions {
	return Versions{CurrentBucket: BucketKeys, PriorBucket: BucketKeyVersions, Retention: retention}
}

// CustodianVersions is the layout of custodian shares (custodian).
func CustodianVersions(retention time.Duration) Versions {
	return Versions{CurrentBucket: BucketCustodian, PriorBucket: BucketCustodian, Sub: "versions", Retention: retention}
}

// ClientShareVersions is the layout of client shares (client_shares).
func ClientShareVersions(retention time.Duration) Versions {
	return Versions{CurrentBucket: BucketClientShares, PriorBucket: BucketClientShares, Sub: "versions", Retention: retention}
}

// priorPrefix is the prefix of (owner, method)'s prior values.
func (v Versions) priorPrefix(owner, method string) []byte {
	if v.Sub == "" {
		return Prefix(owner, method)
	}
	return Prefix(owner, method, v.Sub)
}

func (v Versions) priorKey(owner, method, id string) []byte {
	return append(v.priorPrefix(owner, method), id...)
}

// SplitKey names the record a key of the Current or Prior bucket holds:
// owner and method, and for a prior value its id. ok is false for a key
// of neither shape.
func (v Versions) SplitKey(k []byte) (owner, method, id string, ok bool) {
	parts := strings.Split(string(k), "\x00")
	switch {
	case len(parts) == 2:
		return parts[0], parts[1], "", true
	case v.Sub == "" && len(parts) == 3:
		return parts[0], parts[1], parts[2], true
	case v.Sub != "" && len(parts) == 4 && parts[2] == v.Sub:
		return parts[0], parts[1], parts[3], true
	}
	return "", "", "", false
}

// Get returns the current value of (owner, method), or ErrNotFound.
func (v Versions) Get(tx *Tx, owner, method string) ([]byte, error) {
	return tx.Get(v.CurrentBucket, Key(owner, method))
}

// Put sets the current value of (owner, method) and keeps no prior value
// (a change of bookkeeping, not of the value; see [Versions.KeepPrior]).
func (v Versions) Put(tx *Tx, owner, method string, value []byte) error {
	return tx.Put(v.CurrentBucket, Key(owner, method), value)
}

// KeepPrior keeps the value prior returns as a prior version of (owner,
// method) replaced at now, then prunes the ones past the retention time.
// prior is called only when a value is kept (Retention > 0). It returns the
// new version's id ("" when none is kept).
func (v Versions) KeepPrior(tx *Tx, owner, method string, now time.Time, prior func() ([]byte, error)) (string, error) {
	id := ""
	if v.Retention > 0 {
		b, err := prior()
		if err != nil {
			return "", err
		}
		for at := now; ; at = at.Add(1) {
			id = VersionID(at)
			if _, err := tx.Get(v.PriorBucket, v.priorKey(owner, method, id)); errors.Is(err, ErrNotFound) {
				break
			} else if err != nil {
				return "", err
			}
		}
		if err := tx.Put(v.PriorBucket, v.priorKey(owner, method, id), b); err != nil {
			return "", err
		}
	}
	return id, v.Prune(tx, owner, method, now)
}

// Prune removes the prior values of (owner, method) replaced more than the
// retention time before now (all of them when Retention <= 0). A value
// replaced exactly at the boundary is kept.
func (v Versions) Prune(tx *Tx, owner, method string, now time.Time) error {
	cutoff := VersionID(now.Add(-v.Retention))
	prefix := v.priorPrefix(owner, method)
	var old [][]byte
	err := tx.ForEach(v.PriorBucket, prefix, func(k, _ []byte) error {
		if v.Retention <= 0 || string(k[len(prefix):]) < cutoff {
			old = append(old, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := tx.Delete(v.PriorBucket, k); err != nil {
			return err
		}
	}
	return nil
}

// List calls fn for each prior value of (owner, method), oldest first,
// with its id and the time it was replaced. A damaged id is an error.
func (v Versions) List(tx *Tx, owner, method string, fn func(id string, replacedAt time.Time, value []byte) error) error {
	prefix := v.priorPrefix(owner, method)
	return tx.ForEach(v.PriorBucket, prefix, func(k, val []byte) error {
		id := string(k[len(prefix):])
		if CheckVersionID(id) != nil {
			return fmt.Errorf("store: prior version id %q of bucket %s damaged", id, v.PriorBucket)
		}
		ns, _ := strconv.ParseInt(id, 10, 64)
		return fn(id, time.Unix(0, ns).UTC(), val)
	})
}

// Prior returns prior version id of (owner, method): ErrBadVersionID for
// an id no list gives (checked before the store is read),
// ErrVersionNotFound when there is none.
func (v Versions) Prior(tx *Tx, owner, method, id string) ([]byte, error) {
	if err := CheckVersionID(id); err != nil {
		return nil, err
	}
	b, err := tx.Get(v.PriorBucket, v.priorKey(owner, method, id))
	if errors.Is(err, ErrNotFound) {
		return nil, ErrVersionNotFound
	}
	return b, err
}

// TakePrior is [Versions.Prior] that also removes the prior version, for
// a restore that moves it back to current.
func (v Versions) TakePrior(tx *Tx, owner, method, id string) ([]byte, error) {
	b, err := v.Prior(tx, owner, method, id)
	if err != nil {
		return nil, err
	}
	return b, tx.Delete(v.PriorBucket, v.priorKey(owner, method, id))
}

// RewritePriors calls fn for every prior value in the Prior bucket (every
// owner and method) and stores what it returns in its place; nil keeps the
// value as it is. It returns how many were rewritten. For migrations of
// the prior values' format.
func (v Versions) RewritePriors(tx *Tx, fn func(owner, method, id string, value []byte) ([]byte, error)) (int, error) {
	type change struct{ k, v []byte }
	var changes []change
	err := tx.ForEach(v.PriorBucket, nil, func(k, val []byte) error {
		owner, method, id, ok := v.SplitKey(k)
		if !ok || id == "" {
			return nil
		}
		nv, err := fn(owner, method, id, val)
		if err != nil || nv == nil {
			return err
		}
		changes = append(changes, change{append([]byte(nil), k...), nv})
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, c := range changes {
		if err := tx.Put(v.PriorBucket, c.k, c.v); err != nil {
			return 0, err
		}
	}
	return len(changes), nil
}

// DeleteKeepingPrior removes the current value of (owner, method) and
// keeps what prior returns as a prior version replaced at now (a
// tombstone, listed and restorable like a value replaced by an overwrite).
// With no current value it is ErrNotFound and changes nothing.
func (v Versions) DeleteKeepingPrior(tx *Tx, owner, method string, now time.Time, prior func() ([]byte, error)) error {
	k := Key(owner, method)
	if _, err := tx.Get(v.CurrentBucket, k); err != nil {
		return err
	}
	if _, err := v.KeepPrior(tx, owner, method, now, prior); err != nil {
		return err
	}
	return tx.Delete(v.CurrentBucket, k)
}

// Delete removes the current value of (owner, method) and every prior
// one at once. found reports whether there was a current value.
func (v Versions) Delete(tx *Tx, owner, method string) (found bool, err error) {
	k := Key(owner, method)
	_, err = tx.Get(v.CurrentBucket, k)
	found = err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if err := tx.Delete(v.CurrentBucket, k); err != nil {
		return false, err
	}
	_, err = tx.DeletePrefix(v.PriorBucket, v.priorPrefix(owner, method))
	return found, err
}

// ForEachCurrent calls fn for each current value of owner, ordered by
// method.
func (v Versions) ForEachCurrent(tx *Tx, owner string, fn func(method string, value []byte) error) error {
	prefix := Prefix(owner)
	return tx.ForEach(v.CurrentBucket, prefix, func(k, val []byte) error {
		method := string(k[len(prefix):])
		if strings.IndexByte(method, 0) >= 0 {
			return nil // a prior value kept in the same bucket
		}
		return fn(method, val)
	})
}

// DeleteOwner removes every current and prior value of owner and returns
// how many current values there were.
func (v Versions) DeleteOwner(tx *Tx, owner string) (int, error) {
	n := 0
	if err := v.ForEachCurrent(tx, owner, func(string, []byte) error { n++; return nil }); err != nil {
		return 0, err
	}
	if _, err := tx.DeletePrefix(v.CurrentBucket, Prefix(owner)); err != nil {
		return 0, err
	}
	if v.PriorBucket != v.CurrentBucket {
		if _, err := tx.DeletePrefix(v.PriorBucket, Prefix(owner)); err != nil {
			return 0, err
		}
	}
	return n, nil
}
