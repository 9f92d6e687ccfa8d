package custodian

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/store"
)

// JobState is where a rewrap job is.
type JobState string

// Job states.
const (
	JobRunning JobState = "running" // in progress, or interrupted and waiting for ResumeJobs
	JobDone    JobState = "done"    // every record was visited (Failed counts the ones that did not rewrap)
	JobFailed  JobState = "failed"  // stopped after repeated Vault failures; StartRewrap continues it
)

// JobKind is the kind of the custodian rewrap job in store.BucketJobs.
const JobKind = "custodian_rewrap"

// maxFailedItems caps the failed records named in a job's status.
const maxFailedItems = 20

// JobStatus is a rewrap job's progress. It is stored after every step, in
// the same commit as the rewrapped records, so a crash loses no work and
// repeats none.
type JobStatus struct {
	ID            string    `json:"id"`
	Kind          string    `json:"kind"`
	State         JobState  `json:"state"`
	Total         int       `json:"total"` // ciphertexts (current and prior) when the job started
	Done          int       `json:"done"`  // records visited
	Rewrapped     int       `json:"rewrapped"`
	Failed        int       `json:"failed"` // records Vault would not rewrap (e.g. below min_decryption_version)
	TargetVersion int       `json:"targetVersion,omitempty"`
	FailedItems   []string  `json:"failedItems,omitempty"` // "owner/method[/versions/id]: code", at most 20
	LastError     string    `json:"lastError,omitempty"`   // public message of the last step failure
	StartedAt     time.Time `json:"startedAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
	FinishedAt    time.Time `json:"finishedAt,omitzero"`

	// Cursor is the last store key visited; the next step starts after it.
	Cursor []byte `json:"cursor,omitempty"`
	// Attempts counts consecutive failed steps.
	Attempts int `json:"attempts,omitempty"`
}

// ErrJobNotFound: no rewrap job with that id.
var ErrJobNotFound = apierr.ErrNotFound.WithMessage("no such rewrap job")

var errNotAJob = apierr.New(http.StatusBadRequest, "invalid_job_id", "not a rewrap job id")

func jobKey(id string) []byte { return store.Key(JobKind, id) }

// StartRewrap starts a job that rewraps every stored ciphertext (current
// shares and prior versions) to the Transit key's latest version, in
// batches, in the background, and returns its id. When a job is already
// running, or stopped as failed, that job continues and its id is returned.
// The job runs until done or [Service.Close]; its progress is in
// [Service.JobStatus] and [Service.RewrapProgress].
//
// Order for a key rotation: rotate the key, run this job, then raise
// min_decryption_version. Ciphertexts already below min_decryption_version
// cannot be rewrapped (Vault refuses to open them): they are counted as
// Failed and named in FailedItems.
func (s *Service) StartRewrap(ctx context.Context) (string, error) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if err := s.ctx.Err(); err != nil {
		return "", ErrVaultUnavailable.WithMessage("the custodian service is shutting down").Wrap(err)
	}
	// Continue an unfinished job rather than starting a second one.
	jobs, err := s.jobs(ctx)
	if err != nil {
		return "", err
	}
	for _, j := range jobs {
		if j.State == JobRunning || j.State == JobFailed {
			if j.State == JobFailed {
				j.State, j.Attempts, j.LastError = JobRunning, 0, ""
				if err := s.saveJob(ctx, j); err != nil {
					return "", err
				}
			}
			s.launch(j.ID)
			return j.ID, nil
		}
	}

	target := 0
	if info, err := s.vault.KeyInfo(ctx); err == nil {
		target = info.LatestVersion
	} else if ae, ok := apierr.As(err); !ok || ae.Code != ErrVaultForbidden.Code {
		return "", err // Vault down: do not start a job that cannot run
	} // forbidden: the policy may not read the key; rewrap everything
	total := 0
	if err := s.db.View(ctx, func(tx *store.Tx) error {
		total = 0
		return tx.ForEach(store.BucketCustodian, nil, func(_, _ []byte) error { total++; return nil })
	}); err != nil {
		return "", err
	}
	now := s.now().UTC()
	j := JobStatus{ID: newJobID(), Kind: JobKind, State: JobRunning, Total: total, TargetVersion: target, StartedAt: now, UpdatedAt: now}
	if err := s.saveJob(ctx, j); err != nil {
		return "", err
	}
	s.setLast(j)
	s.log.Info("custodian rewrap job started", "job", j.ID, "total", total, "target_version", target)
	s.launch(j.ID)
	return j.ID, nil
}

// ResumeJobs continues every job left "running" by a previous process
// (crash, restart). Call it once at start; it returns at once.
func (s *Service) ResumeJobs(ctx context.Context) error {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	jobs, err := s.jobs(ctx)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if j.State == JobRunning {
			s.log.Info("resuming custodian rewrap job", "job", j.ID, "done", j.Done, "total", j.Total)
			s.setLast(j)
			s.launch(j.ID)
		}
	}
	return nil
}

// JobStatus reads a job's progress from the store.
func (s *Service) JobStatus(ctx context.Context, id string) (JobStatus, error) {
	if id == "" || strings.IndexByte(id, 0) >= 0 || len(id) > 64 {
		return JobStatus{}, errNotAJob
	}
	var j JobStatus
	err := s.db.View(ctx, func(tx *store.Tx) error {
		b, err := tx.Get(store.BucketJobs, jobKey(id))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &j)
	})
	if errors.Is(err, store.ErrNotFound) {
		return JobStatus{}, ErrJobNotFound
	}
	return j, err
}

// Jobs lists every rewrap job, in id order.
func (s *Service) Jobs(ctx context.Context) ([]JobStatus, error) { return s.jobs(ctx) }

func (s *Service) jobs(ctx context.Context) ([]JobStatus, error) {
	var out []JobStatus
	err := s.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		return tx.ForEach(store.BucketJobs, store.Prefix(JobKind), func(_, v []byte) error {
			var j JobStatus
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("custodian: job record damaged: %w", err)
			}
			out = append(out, j)
			return nil
		})
	})
	return out, err
}

// RewrapProgress is the latest known progress of the most recent job in
// this process (zero when none ran), for metrics. It reads no store.
func (s *Service) RewrapProgress() JobStatus {
	s.jobMu.Lock()
	defer s.jobMu.Unlock()
	j := s.last
	j.FailedItems = append([]string(nil), j.FailedItems...)
	j.Cursor = nil
	return j
}

func (s *Service) setLast(j JobStatus) {
	s.jobMu.Lock()
	s.last = j
	s.jobMu.Unlock()
}

func (s *Service) saveJob(ctx context.Context, j JobStatus) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *store.Tx) error { return tx.Put(store.BucketJobs, jobKey(j.ID), b) })
}

func newJobID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// launch runs the job in the background unless it already runs here.
func (s *Service) launch(id string) {
	s.jobMu.Lock()
	defer s.jobMu.Unlock()
	if s.running[id] {
		return
	}
	s.running[id] = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.jobMu.Lock()
			delete(s.running, id)
			s.jobMu.Unlock()
		}()
		s.runJob(s.ctx, id)
	}()
}

// candidate is one stored ciphertext the job visits.
type candidate struct {
	key        []byte
	owner      string
	method     string
	prior      bool // a prior version: its ciphertext is sealed as priorKind
	ciphertext string
	keyVersion int
	err        error // the record's ciphertext could not be read
}

var errStop = errors.New("stop")

func (s *Service) runJob(ctx context.Context, id string) {
	for {
		j, err := s.JobStatus(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("custodian rewrap job cannot read its state", "job", id, "error", err)
			}
			return
		}
		if j.State != JobRunning {
			return
		}
		batch, err := s.nextBatch(ctx, j.Cursor)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("custodian rewrap job cannot read the store", "job", id, "error", err)
			}
			return
		}
		if len(batch) == 0 {
			now := s.now().UTC()
			j.State, j.FinishedAt, j.UpdatedAt, j.LastError = JobDone, now, now, ""
			if err := s.saveJob(ctx, j); err != nil {
				return
			}
			s.setLast(j)
			s.log.Info("custodian rewrap job done", "job", id, "done", j.Done, "rewrapped", j.Rewrapped, "failed", j.Failed)
			return
		}
		j, err = s.step(ctx, j, batch)
		if err != nil {
			if ctx.Err() != nil {
				return // shutdown: the job stays "running" and resumes later
			}
			e, _ := classify(err)
			j.Attempts++
			j.LastError = e.Message
			j.UpdatedAt = s.now().UTC()
			if j.Attempts >= s.retries {
				j.State = JobFailed
			}
			_ = s.saveJob(ctx, j)
			s.setLast(j)
			s.log.Warn("custodian rewrap step failed", "job", id, "attempt", j.Attempts, "error", err)
			if j.State == JobFailed {
				return
			}
			t := time.NewTimer(min(time.Second<<min(j.Attempts, 5), 30*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		s.setLast(j)
		if s.onStep != nil {
			s.onStep(j)
		}
	}
}

// nextBatch reads up to batchSize records after cursor, in key order.
func (s *Service) nextBatch(ctx context.Context, cursor []byte) ([]candidate, error) {
	var out []candidate
	err := s.db.View(ctx, func(tx *store.Tx) error {
		out = out[:0]
		err := tx.ForEach(store.BucketCustodian, nil, func(k, v []byte) error {
			if cursor != nil && bytes.Compare(k, cursor) <= 0 {
				return nil
			}
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("custodian: stored record damaged: %w", err)
			}
			owner, method, id, ok := s.records.versions.SplitKey(k)
			if !ok {
				owner, _, _ = strings.Cut(string(k), "\x00")
			}
			c := candidate{key: append([]byte(nil), k...), owner: owner, method: method, prior: id != "", keyVersion: rec.KeyVersion}
			c.ciphertext, c.err = s.records.transitCiphertext(owner, method, c.prior, rec)
			out = append(out, c)
			if len(out) >= s.batchSize {
				return errStop
			}
			return nil
		})
		if errors.Is(err, errStop) {
			return nil
		}
		return err
	})
	return out, err
}

// step rewraps one batch and commits the new ciphertexts together with the
// job's progress. A record changed since it was read (a new share was put)
// is left alone: the new one is already under the latest key.
func (s *Service) step(ctx context.Context, j JobStatus, batch []candidate) (JobStatus, error) {
	var items []UnwrapItem
	var idx []int
	for i, c := range batch {
		if c.err != nil || (j.TargetVersion > 0 && c.keyVersion >= j.TargetVersion) {
			continue // unreadable (counted below) or already current
		}
		items = append(items, UnwrapItem{UserID: c.owner, Ciphertext: c.ciphertext})
		idx = append(idx, i)
	}
	res, err := s.vault.Rewrap(ctx, items)
	if err != nil {
		return j, err
	}
	now := s.now().UTC()
	base := j
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		j = base
		j.FailedItems = append([]string(nil), base.FailedItems...)
		fail := func(c candidate, err error) {
			j.Failed++
			if len(j.FailedItems) < maxFailedItems {
				code := "error"
				if ae, ok := apierr.As(err); ok {
					code = ae.Code
				} else if errors.Is(err, enclave.ErrOpen) {
					code = "record_damaged"
				}
				j.FailedItems = append(j.FailedItems, strings.ReplaceAll(string(c.key), "\x00", "/")+": "+code)
			}
		}
		for _, c := range batch {
			if c.err != nil {
				fail(c, c.err)
			}
		}
		for n, r := range res {
			c := batch[idx[n]]
			if r.Err != nil {
				fail(c, r.Err)
				continue
			}
			rec, err := getRecord(tx, c.key)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			if ct, err := s.records.transitCiphertext(c.owner, c.method, c.prior, rec); err != nil || ct != c.ciphertext {
				continue // replaced meanwhile
			}
			if rec, err = s.records.withCiphertext(c.owner, c.method, c.prior, rec, r.Ciphertext); err != nil {
				return err
			}
			rec.KeyVersion = r.KeyVersion
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := tx.Put(store.BucketCustodian, c.key, b); err != nil {
				return err
			}
			j.Rewrapped++
		}
		j.Done += len(batch)
		j.Cursor = batch[len(batch)-1].key
		j.Attempts, j.LastError, j.UpdatedAt = 0, "", now
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return tx.Put(store.BucketJobs, jobKey(j.ID), b)
	})
	if err != nil {
		return base, err
	}
	return j, nil
}
