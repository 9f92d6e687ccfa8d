package custodian

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// ErrShareNotFound: nothing is stored for the owner and method. It matches
// apierr.ErrNotFound with errors.Is.
var ErrShareNotFound = apierr.ErrNotFound.WithMessage("no custodian share is stored for this user and method")

var errBadMethod = apierr.ErrBadRequest.WithMessage("invalid backup method name")

// versionsSub is the sub-key below (owner, method) that holds prior values.
const versionsSub = "versions"

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

// ShareInfo describes a stored share without opening it.
type ShareInfo struct {
	Method     string    `json:"method"`
	KeyVersion int       `json:"keyVersion"` // Transit key version of the ciphertext
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Share is an opened share with its description. Wipe Share when done.
type Share struct {
	ShareInfo
	Share secret.Bytes `json:"-"`
}

// VersionInfo describes a prior value kept after an overwrite.
type VersionInfo struct {
	ID         string    `json:"id"`
	Method     string    `json:"method"`
	KeyVersion int       `json:"keyVersion"`
	ReplacedAt time.Time `json:"replacedAt"`
	CreatedAt  time.Time `json:"createdAt"`
}

// ServiceOptions configure [NewService]. The zero value is usable.
type ServiceOptions struct {
	// VersionRetention is how long a replaced share is kept as a prior
	// version (DECISIONS 3), so a mistaken or hostile overwrite does not
	// destroy the only share that recovers a wallet. Zero means 30 days;
	// negative keeps none.
	VersionRetention time.Duration
	// JobBatchSize is how many records the rewrap job handles per step
	// (one Vault batch, one commit with its progress). Zero means 100.
	JobBatchSize int
	// JobRetries is how many consecutive failed steps (Vault down) the
	// rewrap job survives, with backoff up to 30 s, before it stops as
	// "failed" (resumable with [Service.StartRewrap]). Zero means 10.
	JobRetries int
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Root seals prior versions as priorKind. The appliance always sets
	// it; without it (tests, tools) prior versions are kept as plain
	// ciphertext records, which open if copied over the current one.
	Root *enclave.Root
}

// Service stores custodian shares: each share is wrapped by Vault Transit
// and only the ciphertext is kept, in store.BucketCustodian.
//
// # Records
//
//	custodian/
//	├── owner 0x00 method                            → {ciphertext, keyVersion, createdAt, updatedAt}
//	└── owner 0x00 method 0x00 "versions" 0x00 <ns>  → the same, for a value replaced at <ns> (20 digits)
//
// The Transit derivation context is the owner, so a ciphertext opens only
// for the owner it was made for.
//
// # No half-writes
//
// A write first asks Vault and stores only after Vault answered; a Vault
// failure leaves the store as it was. Reads make no write.
type Service struct {
	vault     *Client
	db        *store.DB
	root      *enclave.Root
	retention time.Duration
	batchSize int
	retries   int
	now       func() time.Time
	log       *slog.Logger

	ctx    context.Context // lifetime of background jobs
	cancel context.CancelFunc
	wg     sync.WaitGroup

	startMu sync.Mutex      // serializes StartRewrap and ResumeJobs
	jobMu   sync.Mutex      // guards running and last
	running map[string]bool // job ids running in this process
	last    JobStatus       // most recent progress, for metrics

	onStep func(JobStatus) // test hook: after each committed step
}

// NewService returns the share service over a Vault client and the store.
func NewService(vault *Client, db *store.DB, opts ServiceOptions) *Service {
	if opts.VersionRetention == 0 {
		opts.VersionRetention = 30 * 24 * time.Hour
	}
	if opts.JobBatchSize <= 0 {
		opts.JobBatchSize = 100
	}
	if opts.JobRetries <= 0 {
		opts.JobRetries = 10
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		vault: vault, db: db, root: opts.Root,
		retention: opts.VersionRetention, batchSize: opts.JobBatchSize, retries: opts.JobRetries,
		now: opts.Clock, log: opts.Logger.With("component", "custodian"),
		ctx: ctx, cancel: cancel, running: map[string]bool{},
	}
	if s.root != nil {
		if n, err := s.sealLegacyPriors(context.Background()); err != nil {
			// Restores still read plain records; the next start retries.
			s.log.Error("sealing prior versions of older builds failed", "err", err)
		} else if n > 0 {
			s.log.Info("sealed prior versions of older builds", "records", n)
		}
	}
	return s
}

// splitKey splits a record key into owner, method and, for a prior
// version, its id.
func splitKey(k []byte) (owner, method, id string, ok bool) {
	parts := strings.Split(string(k), "\x00")
	switch {
	case len(parts) == 2:
		return parts[0], parts[1], "", true
	case len(parts) == 4 && parts[2] == versionsSub:
		return parts[0], parts[1], parts[3], true
	}
	return "", "", "", false
}

func priorBinding(owner, method string) enclave.Binding {
	return enclave.Binding{Kind: priorKind, Owner: enclave.Owner(owner), Method: method}
}

// transitCiphertext is the Transit ciphertext rec holds: a current
// record's own, a prior version's after opening its seal (or, written by
// an older build, its own).
func (s *Service) transitCiphertext(owner, method string, prior bool, rec record) (string, error) {
	switch {
	case !prior && rec.Sealed != nil, rec.Ciphertext == "" && rec.Sealed == nil:
		return "", errPriorInCurrent
	case rec.Sealed == nil:
		return rec.Ciphertext, nil
	case s.root == nil:
		return "", fmt.Errorf("custodian: a sealed prior version needs the root key: %w", enclave.ErrOpen)
	}
	pt, err := s.root.Open(priorBinding(owner, method), rec.Sealed)
	if err != nil {
		return "", err
	}
	return string(pt), nil
}

// withCiphertext sets ct as rec's ciphertext the way its slot keeps it:
// sealed as priorKind for a prior version (when the root key is there).
func (s *Service) withCiphertext(owner, method string, prior bool, rec record, ct string) (record, error) {
	if !prior || s.root == nil {
		rec.Ciphertext, rec.Sealed = ct, nil
		return rec, nil
	}
	sealed, err := s.root.Seal(priorBinding(owner, method), []byte(ct))
	if err != nil {
		return rec, err
	}
	rec.Ciphertext, rec.Sealed = "", sealed
	return rec, nil
}

// sealLegacyPriors seals, as priorKind, every prior version an older build
// kept as a plain ciphertext record, once per store (store.MetaCustodianPriorsSealed).
func (s *Service) sealLegacyPriors(ctx context.Context) (int, error) {
	var n int
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		n = 0
		if _, err := tx.GetMeta(store.MetaCustodianPriorsSealed); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		type change struct{ k, v []byte }
		var changes []change
		err := tx.ForEach(store.BucketCustodian, nil, func(k, v []byte) error {
			owner, method, id, ok := splitKey(k)
			if !ok || id == "" {
				return nil
			}
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil || rec.Sealed != nil || rec.Ciphertext == "" {
				return nil
			}
			rec, err := s.withCiphertext(owner, method, true, rec, rec.Ciphertext)
			if err != nil {
				return err
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			changes = append(changes, change{append([]byte(nil), k...), b})
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range changes {
			if err := tx.Put(store.BucketCustodian, c.k, c.v); err != nil {
				return err
			}
		}
		n = len(changes)
		return tx.PutMeta(store.MetaCustodianPriorsSealed, []byte("1"))
	})
	return n, err
}

// Close stops background jobs and waits for them. A stopped job keeps its
// state "running" in the store and continues at the next [Service.ResumeJobs].
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Vault is the underlying client (for health and metrics).
func (s *Service) Vault() *Client { return s.vault }

func validOwnerMethod(owner, method string) error {
	if err := checkUserID(owner); err != nil || !utf8.ValidString(owner) {
		return ErrInvalidOwner
	}
	if method == "" || len(method) > 128 || strings.IndexByte(method, 0) >= 0 || !utf8.ValidString(method) {
		return errBadMethod
	}
	return nil
}

func versionID(t time.Time) string { return fmt.Sprintf("%020d", t.UnixNano()) }

// Put wraps share for owner and stores it under (owner, method). An
// existing share is replaced and kept as a prior version. replaced reports
// whether there was one. Nothing is stored when Vault fails.
func (s *Service) Put(ctx context.Context, owner, method string, share []byte) (replaced bool, err error) {
	errs, err := s.PutBatch(ctx, []PutItem{{Owner: owner, Method: method, Share: share}})
	if err != nil {
		return false, err
	}
	if errs[0].Err != nil {
		return false, errs[0].Err
	}
	return errs[0].Replaced, nil
}

// PutItem is one share to store.
type PutItem struct {
	Owner, Method string
	Share         []byte
}

// PutResult is the outcome of one PutItem.
type PutResult struct {
	Replaced bool
	Err      error
}

// PutBatch stores many shares: one Transit batch, then one commit holding
// every share Vault wrapped. The error is for the whole call; per-item
// failures (invalid input, Vault refusing an item) are in the results and
// store nothing for that item.
func (s *Service) PutBatch(ctx context.Context, items []PutItem) ([]PutResult, error) {
	out := make([]PutResult, len(items))
	wrap := make([]WrapItem, 0, len(items))
	idx := make([]int, 0, len(items))
	for i, it := range items {
		if err := validOwnerMethod(it.Owner, it.Method); err != nil {
			out[i].Err = err
			continue
		}
		wrap = append(wrap, WrapItem{UserID: it.Owner, Share: it.Share})
		idx = append(idx, i)
	}
	if len(wrap) == 0 {
		return out, nil
	}
	res, err := s.vault.WrapBatch(ctx, wrap)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		for j, r := range res {
			i := idx[j]
			out[i] = PutResult{Err: r.Err}
			if r.Err != nil {
				continue
			}
			replaced, err := s.putTx(tx, items[i].Owner, items[i].Method, record{
				Ciphertext: r.Ciphertext, KeyVersion: r.KeyVersion, CreatedAt: now, UpdatedAt: now,
			}, now)
			if err != nil {
				return err
			}
			out[i].Replaced = replaced
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// putTx writes rec as the current record, keeping the one it replaces.
func (s *Service) putTx(tx *store.Tx, owner, method string, rec record, now time.Time) (bool, error) {
	k := store.Key(owner, method)
	old, err := tx.Get(store.BucketCustodian, k)
	replaced := err == nil
	switch {
	case replaced:
		var prev record
		if err := json.Unmarshal(old, &prev); err != nil {
			return false, fmt.Errorf("custodian: stored record damaged: %w", err)
		}
		rec.CreatedAt = prev.CreatedAt
		if s.retention > 0 {
			// Two replacements in one commit get distinct ids.
			var vk []byte
			for at := now; ; at = at.Add(1) {
				vk = store.Key(owner, method, versionsSub, versionID(at))
				if _, err := tx.Get(store.BucketCustodian, vk); errors.Is(err, store.ErrNotFound) {
					break
				} else if err != nil {
					return false, err
				}
			}
			pb := old
			if prev.Sealed == nil && prev.Ciphertext != "" {
				prior, err := s.withCiphertext(owner, method, true, prev, prev.Ciphertext)
				if err != nil {
					return false, err
				}
				if pb, err = json.Marshal(prior); err != nil {
					return false, err
				}
			} // else a prior copied over the current one: kept as it is
			if err := tx.Put(store.BucketCustodian, vk, pb); err != nil {
				return false, err
			}
		}
		if err := s.pruneVersions(tx, owner, method, now); err != nil {
			return false, err
		}
	case !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	return replaced, tx.Put(store.BucketCustodian, k, b)
}

func (s *Service) pruneVersions(tx *store.Tx, owner, method string, now time.Time) error {
	cutoff := versionID(now.Add(-s.retention))
	prefix := store.Prefix(owner, method, versionsSub)
	var old [][]byte
	err := tx.ForEach(store.BucketCustodian, prefix, func(k, _ []byte) error {
		if s.retention <= 0 || string(k[len(prefix):]) < cutoff {
			old = append(old, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range old {
		if err := tx.Delete(store.BucketCustodian, k); err != nil {
			return err
		}
	}
	return err
}

// Get opens the share stored for (owner, method). It writes nothing.
func (s *Service) Get(ctx context.Context, owner, method string) (secret.Bytes, error) {
	r, err := s.GetBatch(ctx, []Ref{{Owner: owner, Method: method}})
	if err != nil {
		return secret.Bytes{}, err
	}
	return r[0].Share, r[0].Err
}

// Ref names a stored share.
type Ref struct{ Owner, Method string }

// GetBatch opens many shares with one Transit batch. Missing shares are
// ErrShareNotFound in their result.
func (s *Service) GetBatch(ctx context.Context, refs []Ref) ([]UnwrapResult, error) {
	out := make([]UnwrapResult, len(refs))
	items := make([]UnwrapItem, 0, len(refs))
	idx := make([]int, 0, len(refs))
	err := s.db.View(ctx, func(tx *store.Tx) error {
		items, idx = items[:0], idx[:0]
		for i, r := range refs {
			if err := validOwnerMethod(r.Owner, r.Method); err != nil {
				out[i].Err = err
				continue
			}
			rec, err := getRecord(tx, store.Key(r.Owner, r.Method))
			if errors.Is(err, store.ErrNotFound) {
				out[i].Err = ErrShareNotFound
				continue
			}
			if err != nil {
				return err
			}
			if rec.Sealed != nil || rec.Ciphertext == "" {
				out[i].Err = errPriorInCurrent
				continue
			}
			items = append(items, UnwrapItem{UserID: r.Owner, Ciphertext: rec.Ciphertext})
			idx = append(idx, i)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res, err := s.vault.UnwrapBatch(ctx, items)
	if err != nil {
		return nil, err
	}
	for j, r := range res {
		out[idx[j]] = r
	}
	return out, nil
}

func getRecord(tx *store.Tx, k []byte) (record, error) {
	var rec record
	b, err := tx.Get(store.BucketCustodian, k)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("custodian: stored record damaged: %w", err)
	}
	return rec, nil
}

// Info describes the share of (owner, method) without asking Vault.
func (s *Service) Info(ctx context.Context, owner, method string) (ShareInfo, error) {
	if err := validOwnerMethod(owner, method); err != nil {
		return ShareInfo{}, err
	}
	var rec record
	err := s.db.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = getRecord(tx, store.Key(owner, method))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return ShareInfo{}, ErrShareNotFound
	}
	if err != nil {
		return ShareInfo{}, err
	}
	return ShareInfo{Method: method, KeyVersion: rec.KeyVersion, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt}, nil
}

// List opens every current share of owner (Portal's /webhook/backup/fetch
// answers with all of them), ordered by method. It fails as a whole when
// any share fails to open: a partial answer would look complete.
func (s *Service) List(ctx context.Context, owner string) ([]Share, error) {
	if err := checkUserID(owner); err != nil {
		return nil, err
	}
	var infos []ShareInfo
	var items []UnwrapItem
	prefix := store.Prefix(owner)
	err := s.db.View(ctx, func(tx *store.Tx) error {
		infos, items = infos[:0], items[:0]
		return tx.ForEach(store.BucketCustodian, prefix, func(k, v []byte) error {
			method := string(k[len(prefix):])
			if strings.IndexByte(method, 0) >= 0 {
				return nil // a prior version
			}
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("custodian: stored record damaged: %w", err)
			}
			if rec.Sealed != nil || rec.Ciphertext == "" {
				return errPriorInCurrent
			}
			infos = append(infos, ShareInfo{Method: method, KeyVersion: rec.KeyVersion, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt})
			items = append(items, UnwrapItem{UserID: owner, Ciphertext: rec.Ciphertext})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	res, err := s.vault.UnwrapBatch(ctx, items)
	if err != nil {
		return nil, err
	}
	out := make([]Share, len(res))
	var first error
	for i, r := range res {
		if r.Err != nil && first == nil {
			first = r.Err
		}
		out[i] = Share{ShareInfo: infos[i], Share: r.Share}
	}
	if first != nil {
		for _, sh := range out {
			sh.Share.Wipe()
		}
		return nil, first
	}
	return out, nil
}

// Delete removes the share of (owner, method) and its prior versions.
func (s *Service) Delete(ctx context.Context, owner, method string) error {
	if err := validOwnerMethod(owner, method); err != nil {
		return err
	}
	found := false
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		k := store.Key(owner, method)
		_, err := tx.Get(store.BucketCustodian, k)
		found = err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.Delete(store.BucketCustodian, k); err != nil {
			return err
		}
		_, err = tx.DeletePrefix(store.BucketCustodian, store.Prefix(owner, method, versionsSub))
		return err
	})
	if err == nil && !found {
		return ErrShareNotFound
	}
	return err
}

// DeleteOwner removes every share and prior version of owner and returns
// how many current shares there were.
func (s *Service) DeleteOwner(ctx context.Context, owner string) (int, error) {
	if err := checkUserID(owner); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		n = 0
		prefix := store.Prefix(owner)
		if err := tx.ForEach(store.BucketCustodian, prefix, func(k, _ []byte) error {
			if strings.IndexByte(string(k[len(prefix):]), 0) < 0 {
				n++
			}
			return nil
		}); err != nil {
			return err
		}
		_, err := tx.DeletePrefix(store.BucketCustodian, prefix)
		return err
	})
	return n, err
}

// ListVersions lists the prior values of (owner, method), oldest first.
func (s *Service) ListVersions(ctx context.Context, owner, method string) ([]VersionInfo, error) {
	if err := validOwnerMethod(owner, method); err != nil {
		return nil, err
	}
	var out []VersionInfo
	prefix := store.Prefix(owner, method, versionsSub)
	err := s.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return tx.ForEach(store.BucketCustodian, prefix, func(k, v []byte) error {
			id := string(k[len(prefix):])
			ns, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				return fmt.Errorf("custodian: bad version id: %w", err)
			}
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("custodian: stored record damaged: %w", err)
			}
			out = append(out, VersionInfo{ID: id, Method: method, KeyVersion: rec.KeyVersion,
				ReplacedAt: time.Unix(0, ns).UTC(), CreatedAt: rec.CreatedAt})
			return nil
		})
	})
	return out, err
}

// RestoreVersion makes prior version id the current share again; the
// share it replaces becomes a prior version in turn. The ciphertext is
// bound to the same owner, so no Vault call is needed.
func (s *Service) RestoreVersion(ctx context.Context, owner, method, id string) error {
	if err := validOwnerMethod(owner, method); err != nil {
		return err
	}
	if err := enclave.CheckVersionID(id); err != nil {
		return err
	}
	now := s.now().UTC()
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		vk := store.Key(owner, method, versionsSub, id)
		rec, err := getRecord(tx, vk)
		if err != nil {
			return err
		}
		ct, err := s.transitCiphertext(owner, method, true, rec)
		if err != nil {
			return err
		}
		if err := tx.Delete(store.BucketCustodian, vk); err != nil {
			return err
		}
		rec.Ciphertext, rec.Sealed = ct, nil
		rec.UpdatedAt = now
		_, err = s.putTx(tx, owner, method, rec, now)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return apierr.ErrNotFound.WithMessage("no such prior version")
	}
	return err
}
