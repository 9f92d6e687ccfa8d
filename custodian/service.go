package custodian

import (
	"context"
	"errors"
	"log/slog"
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
	// version (decisions/03), so a mistaken or hostile overwrite does not
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
// and only the ciphertext is kept, in store.BucketCustodian, through
// [Records] (the storage, which needs no Vault).
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
	records   *Records
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
		vault: vault, db: db,
		records:   NewRecords(db, RecordsOptions{VersionRetention: opts.VersionRetention, Root: opts.Root, Clock: opts.Clock}),
		batchSize: opts.JobBatchSize, retries: opts.JobRetries,
		now: opts.Clock, log: opts.Logger.With("component", "custodian"),
		ctx: ctx, cancel: cancel, running: map[string]bool{},
	}
	if opts.Root != nil {
		if n, err := s.records.sealLegacyPriors(context.Background()); err != nil {
			// Restores still read plain records; the next start retries.
			s.log.Error("sealing prior versions of older builds failed", "err", err)
		} else if n > 0 {
			s.log.Info("sealed prior versions of older builds", "records", n)
		}
	}
	return s
}

// Close stops background jobs and waits for them. A stopped job keeps its
// state "running" in the store and continues at the next [Service.ResumeJobs].
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Vault is the underlying client (for health and metrics).
func (s *Service) Vault() *Client { return s.vault }

// Records is the storage of the shares (no Vault).
func (s *Service) Records() *Records { return s.records }

func validOwnerMethod(owner, method string) error {
	if err := checkUserID(owner); err != nil || !utf8.ValidString(owner) {
		return ErrInvalidOwner
	}
	if method == "" || len(method) > 128 || strings.IndexByte(method, 0) >= 0 || !utf8.ValidString(method) {
		return errBadMethod
	}
	return nil
}

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
			replaced, err := s.records.putTx(tx, items[i].Owner, items[i].Method, record{
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
			rec, err := s.records.get(tx, r.Owner, r.Method)
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

// Info describes the share of (owner, method) without asking Vault.
func (s *Service) Info(ctx context.Context, owner, method string) (ShareInfo, error) {
	return s.records.Info(ctx, owner, method)
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
	err := s.db.View(ctx, func(tx *store.Tx) error {
		infos, items = infos[:0], items[:0]
		return s.records.forEachCurrent(tx, owner, func(method string, rec record) error {
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
	return s.records.Delete(ctx, owner, method)
}

// DeleteOwner removes every share and prior version of owner and returns
// how many current shares there were.
func (s *Service) DeleteOwner(ctx context.Context, owner string) (int, error) {
	return s.records.DeleteOwner(ctx, owner)
}

// ListVersions lists the prior values of (owner, method), oldest first.
func (s *Service) ListVersions(ctx context.Context, owner, method string) ([]VersionInfo, error) {
	return s.records.ListVersions(ctx, owner, method)
}

// RestoreVersion makes prior version id the current share again; the
// share it replaces becomes a prior version in turn. The ciphertext is
// bound to the same owner, so no Vault call is needed.
func (s *Service) RestoreVersion(ctx context.Context, owner, method, id string) error {
	return s.records.RestoreVersion(ctx, owner, method, id)
}
