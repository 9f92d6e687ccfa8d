package custodian

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/store"
)

func TestServicePutGetListDelete(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	s := newService(t, newClient(t, v, nil), db, ServiceOptions{})
	ctx := testCtx(t)

	if _, err := s.Get(ctx, "user:alice", "default"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("Get before Put: %v", err)
	}
	replaced, err := s.Put(ctx, "user:alice", "default", []byte("share-1"))
	if err != nil || replaced {
		t.Fatalf("Put: replaced=%v err=%v", replaced, err)
	}
	if _, err := s.Put(ctx, "user:alice", "PASSKEY-SECP256K1", []byte("share-passkey")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "user:bob", "default", []byte("bob-share")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "user:alice", "default")
	if err != nil || string(got.Reveal()) != "share-1" {
		t.Fatalf("Get: %q %v", got.Reveal(), err)
	}

	// The store holds the ciphertext and its metadata, never the share.
	err = db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketCustodian, nil, func(k, v []byte) error {
			if bytes.Contains(v, []byte("share")) {
				t.Errorf("record %q holds the share", k)
			}
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil || !strings.HasPrefix(rec.Ciphertext, "vault:v1:") || rec.KeyVersion != 1 || rec.CreatedAt.IsZero() {
				t.Errorf("record %q = %s (%v)", k, v, err)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	list, err := s.List(ctx, "user:alice")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 2 || list[0].Method != "PASSKEY-SECP256K1" || string(list[0].Share.Reveal()) != "share-passkey" ||
		list[1].Method != "default" || string(list[1].Share.Reveal()) != "share-1" {
		t.Fatalf("List = %+v", list)
	}

	// Overwrite keeps the prior version, which can be restored.
	replaced, err = s.Put(ctx, "user:alice", "default", []byte("share-2"))
	if err != nil || !replaced {
		t.Fatalf("overwrite: replaced=%v err=%v", replaced, err)
	}
	vs, err := s.ListVersions(ctx, "user:alice", "default")
	if err != nil || len(vs) != 1 {
		t.Fatalf("versions %+v %v", vs, err)
	}
	list, err = s.List(ctx, "user:alice")
	if err != nil || len(list) != 2 {
		t.Fatalf("List after overwrite lists prior versions: %+v %v", list, err)
	}
	if err := s.RestoreVersion(ctx, "user:alice", "default", vs[0].ID); err != nil {
		t.Fatalf("RestoreVersion: %v", err)
	}
	got, err = s.Get(ctx, "user:alice", "default")
	if err != nil || string(got.Reveal()) != "share-1" {
		t.Fatalf("after restore: %q %v", got.Reveal(), err)
	}
	vs, _ = s.ListVersions(ctx, "user:alice", "default")
	if len(vs) != 1 {
		t.Fatalf("after restore, %d versions; want the replaced share-2 kept", len(vs))
	}
	if err := s.RestoreVersion(ctx, "user:alice", "default", "00000000000000000001"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("restore of an unknown version: %v", err)
	}

	info, err := s.Info(ctx, "user:alice", "default")
	if err != nil || info.KeyVersion != 1 || info.Method != "default" {
		t.Fatalf("Info %+v %v", info, err)
	}

	if err := s.Delete(ctx, "user:alice", "default"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "user:alice", "default"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if vs, _ := s.ListVersions(ctx, "user:alice", "default"); len(vs) != 0 {
		t.Fatal("Delete kept prior versions")
	}
	n, err := s.DeleteOwner(ctx, "user:alice")
	if err != nil || n != 1 {
		t.Fatalf("DeleteOwner = %d, %v", n, err)
	}
	if got, err := s.Get(ctx, "user:bob", "default"); err != nil || string(got.Reveal()) != "bob-share" {
		t.Fatal("DeleteOwner touched another owner")
	}

	t.Run("invalid input", func(t *testing.T) {
		for _, tt := range []struct{ owner, method string }{
			{"", "default"}, {"user:a", ""}, {"user:\x00", "default"}, {"user:a", "m\x00x"}, {"user:a", strings.Repeat("m", 200)},
		} {
			_, err := s.Put(ctx, tt.owner, tt.method, []byte("x"))
			if e, ok := apierr.As(err); !ok || e.Status != 400 {
				t.Errorf("Put(%q, %q): %v", tt.owner, tt.method, err)
			}
		}
	})
}

func TestServiceRetention(t *testing.T) {
	v := vaultdev.Start(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := newService(t, newClient(t, v, nil), newDB(t), ServiceOptions{VersionRetention: time.Hour, Clock: clock})
	ctx := testCtx(t)
	for i := range 3 {
		if _, err := s.Put(ctx, "user:a", "default", []byte(fmt.Sprint("share-", i))); err != nil {
			t.Fatal(err)
		}
		advance(40 * time.Minute)
	}
	// Versions replaced at +40m and +80m; at +120m the cutoff is +60m.
	vs, err := s.ListVersions(ctx, "user:a", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d versions, want 2 before pruning", len(vs))
	}
	if _, err := s.Put(ctx, "user:a", "default", []byte("share-3")); err != nil {
		t.Fatal(err)
	}
	vs, _ = s.ListVersions(ctx, "user:a", "default")
	if len(vs) != 2 || !vs[0].ReplacedAt.Equal(time.Date(2026, 1, 1, 1, 20, 0, 0, time.UTC)) {
		t.Fatalf("after pruning: %+v", vs)
	}

	none := newService(t, s.vault, newDB(t), ServiceOptions{VersionRetention: -1})
	for range 2 {
		if _, err := none.Put(ctx, "user:a", "default", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if vs, _ := none.ListVersions(ctx, "user:a", "default"); len(vs) != 0 {
		t.Fatal("negative retention kept a version")
	}
}

func TestServiceBatch(t *testing.T) {
	v := vaultdev.Start(t)
	s := newService(t, newClient(t, v, func(o *Options) { o.BatchSize = 8 }), newDB(t), ServiceOptions{})
	ctx := testCtx(t)
	var items []PutItem
	for i := range 30 {
		items = append(items, PutItem{Owner: fmt.Sprintf("user:%02d", i), Method: "default", Share: []byte(fmt.Sprint("share-", i))})
	}
	items[4].Share = nil
	items[5].Method = ""
	res, err := s.PutBatch(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, res[4].Err, ErrInvalidShare.Code)
	wantCode(t, res[5].Err, "bad_request")
	var refs []Ref
	for _, it := range items {
		refs = append(refs, Ref{Owner: it.Owner, Method: "default"})
	}
	out, err := s.GetBatch(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range out {
		switch i {
		case 4, 5:
			if !errors.Is(r.Err, apierr.ErrNotFound) {
				t.Fatalf("item %d: %v, want not found (nothing stored)", i, r.Err)
			}
		default:
			if r.Err != nil || string(r.Share.Reveal()) != fmt.Sprint("share-", i) {
				t.Fatalf("item %d: %q %v", i, r.Share.Reveal(), r.Err)
			}
		}
	}
}

// Vault stops in the middle of a run: writes fail fast with 503 and store
// nothing; what was stored before is intact.
func TestServiceVaultStoppedMidRun(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	s := newService(t, newClient(t, v, nil), db, ServiceOptions{})
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "user:a", "default", []byte("share-before")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, db)

	v.Stop()
	_, err := s.Put(ctx, "user:a", "default", []byte("share-after"))
	e := wantCode(t, err, ErrVaultUnavailable.Code)
	if e.Status != 503 || e.RetryAfter <= 0 {
		t.Fatalf("status %d retry-after %s", e.Status, e.RetryAfter)
	}
	noSecretIn(t, err, "share-after")
	_, err = s.Put(ctx, "user:new", "default", []byte("share-new"))
	wantCode(t, err, ErrVaultUnavailable.Code)
	res, err := s.PutBatch(ctx, []PutItem{{Owner: "user:b", Method: "m", Share: []byte("x")}})
	if res != nil || err == nil {
		t.Fatalf("PutBatch with Vault down: %v %v", res, err)
	}
	_, err = s.Get(ctx, "user:a", "default")
	wantCode(t, err, ErrVaultUnavailable.Code)
	if _, err := s.StartRewrap(ctx); err == nil {
		t.Fatal("a rewrap job started with Vault down")
	}

	if after := snapshot(t, db); after != before {
		t.Fatalf("the store changed while Vault was down:\nbefore %s\nafter  %s", before, after)
	}
	if info, err := s.Info(ctx, "user:a", "default"); err != nil || info.KeyVersion != 1 {
		t.Fatalf("Info after the outage: %+v %v", info, err)
	}
}

// Puts run while Vault stops: every Put that succeeded is stored, every
// one that failed stored nothing and failed with 503.
func TestServiceVaultStoppedDuringPuts(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	s := newService(t, newClient(t, v, nil), db, ServiceOptions{})
	ctx := testCtx(t)

	const workers = 4
	var mu sync.Mutex
	results := map[string]error{}
	stopped := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				owner := fmt.Sprintf("user:w%d-%04d", w, i)
				_, err := s.Put(ctx, owner, "default", []byte("share-"+owner))
				mu.Lock()
				results[owner] = err
				mu.Unlock()
				if err != nil {
					select {
					case <-stopped:
						return
					default:
						t.Errorf("Put %s before the stop: %v", owner, err)
						return
					}
				}
			}
		}()
	}
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n >= 40 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stopped)
	v.Stop()
	wg.Wait()

	ok, failed := 0, 0
	for owner, perr := range results {
		_, err := s.Info(ctx, owner, "default")
		switch {
		case perr == nil && err == nil:
			ok++
		case perr != nil && errors.Is(err, apierr.ErrNotFound):
			wantCode(t, perr, ErrVaultUnavailable.Code)
			failed++
		default:
			t.Errorf("%s: Put returned %v, store says %v", owner, perr, err)
		}
	}
	if ok < 40 || failed < workers {
		t.Fatalf("%d stored, %d refused", ok, failed)
	}
}

func snapshot(t *testing.T, db *store.DB) string {
	var b strings.Builder
	err := db.View(context.Background(), func(tx *store.Tx) error {
		for _, bk := range []store.Bucket{store.BucketCustodian, store.BucketJobs} {
			if err := tx.ForEach(bk, nil, func(k, v []byte) error {
				fmt.Fprintf(&b, "%s|%q=%s\n", bk, k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Rotation with min_decryption_version raised: a ciphertext below it fails
// with an error naming its version and cannot be rewrapped; one rewrapped
// before the raise opens. The documented order (rotate, rewrap, raise)
// brings every share back.
func TestRotationMinDecryptionVersion(t *testing.T) {
	v := vaultdev.Start(t)
	s := newService(t, newClient(t, v, nil), newDB(t), ServiceOptions{})
	ctx := testCtx(t)

	if _, err := s.Put(ctx, "user:old", "default", []byte("old-share")); err != nil { // v1
		t.Fatal(err)
	}
	if v.RotateKey(vaultdev.KeyName) != 2 {
		t.Fatal("rotate")
	}
	if _, err := s.Put(ctx, "user:mid", "default", []byte("mid-share")); err != nil { // v2
		t.Fatal(err)
	}
	v.RotateKey(vaultdev.KeyName) // v3
	v.SetMinDecryptionVersion(vaultdev.KeyName, 2)

	_, err := s.Get(ctx, "user:old", "default")
	e := wantCode(t, err, ErrVersionRetired.Code)
	if e.Status != 409 || !strings.Contains(e.Message, "version 1") {
		t.Fatalf("retired error: %d %q", e.Status, e.Message)
	}
	if got, err := s.Get(ctx, "user:mid", "default"); err != nil || string(got.Reveal()) != "mid-share" {
		t.Fatalf("v2 share: %v", err)
	}

	// The job cannot rewrap the retired one; it names it and goes on.
	id, err := s.StartRewrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, s, id)
	if j.State != JobDone || j.Total != 2 || j.Done != 2 || j.Rewrapped != 1 || j.Failed != 1 || j.TargetVersion != 3 {
		t.Fatalf("job %+v", j)
	}
	if len(j.FailedItems) != 1 || !strings.Contains(j.FailedItems[0], "user:old/default") || !strings.Contains(j.FailedItems[0], ErrVersionRetired.Code) {
		t.Fatalf("failed items %q", j.FailedItems)
	}
	if info, _ := s.Info(ctx, "user:mid", "default"); info.KeyVersion != 3 {
		t.Fatalf("mid share at version %d after rewrap", info.KeyVersion)
	}

	// The documented order: lower, rewrap, raise.
	v.SetMinDecryptionVersion(vaultdev.KeyName, 1)
	id2, err := s.StartRewrap(ctx)
	if err != nil || id2 == id {
		t.Fatalf("second job: %s %v", id2, err)
	}
	j = waitJob(t, s, id2)
	if j.State != JobDone || j.Rewrapped != 1 || j.Failed != 0 {
		t.Fatalf("second job %+v", j)
	}
	v.SetMinDecryptionVersion(vaultdev.KeyName, 3)
	for owner, want := range map[string]string{"user:old": "old-share", "user:mid": "mid-share"} {
		got, err := s.Get(ctx, owner, "default")
		if err != nil || string(got.Reveal()) != want {
			t.Fatalf("%s after rewrap and raise: %v", owner, err)
		}
	}
	if p := s.RewrapProgress(); p.ID != id2 || p.State != JobDone || p.Cursor != nil {
		t.Fatalf("progress %+v", p)
	}
}

// The rewrap job is stopped after its first batch (as by a crash or a
// shutdown) and a new service over the same store resumes and finishes it.
func TestRewrapJobResume(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	c := newClient(t, v, nil)
	ctx := testCtx(t)
	const n, batch = 23, 5

	s1 := NewService(c, db, ServiceOptions{JobBatchSize: batch})
	var items []PutItem
	for i := range n {
		items = append(items, PutItem{Owner: fmt.Sprintf("user:%02d", i), Method: "default", Share: []byte(fmt.Sprint("share-", i))})
	}
	if _, err := s1.PutBatch(ctx, items); err != nil {
		t.Fatal(err)
	}
	// One overwrite: its prior version is a stored ciphertext too.
	if _, err := s1.Put(ctx, "user:00", "default", []byte("share-0b")); err != nil {
		t.Fatal(err)
	}
	v.RotateKey(vaultdev.KeyName)

	steps := 0
	stepped := make(chan struct{})
	s1.onStep = func(JobStatus) {
		steps++
		if steps == 1 {
			s1.cancel() // killed half-way, right after the first commit
			close(stepped)
		}
	}
	id, err := s1.StartRewrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-stepped
	s1.Close()
	j, err := s1.JobStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != JobRunning || j.Done != batch || j.Total != n+1 || j.Cursor == nil {
		t.Fatalf("after the kill: %+v", j)
	}

	s2 := newService(t, c, db, ServiceOptions{JobBatchSize: batch})
	if err := s2.ResumeJobs(ctx); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, s2, id)
	if j.State != JobDone || j.Done != n+1 || j.Rewrapped != n+1 || j.Failed != 0 {
		t.Fatalf("resumed job %+v", j)
	}
	// Every ciphertext (current and prior) is at version 2 and opens.
	v.SetMinDecryptionVersion(vaultdev.KeyName, 2)
	err = db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketCustodian, nil, func(k, val []byte) error {
			var rec record
			_ = json.Unmarshal(val, &rec)
			if rec.KeyVersion != 2 || !strings.HasPrefix(rec.Ciphertext, "vault:v2:") {
				t.Errorf("%q at version %d", k, rec.KeyVersion)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		got, err := s2.Get(ctx, fmt.Sprintf("user:%02d", i), "default")
		if err != nil || string(got.Reveal()) != fmt.Sprint("share-", i) {
			t.Fatalf("user %d: %v", i, err)
		}
	}
	vs, _ := s2.ListVersions(ctx, "user:00", "default")
	if len(vs) != 1 || vs[0].KeyVersion != 2 {
		t.Fatalf("prior version not rewrapped: %+v", vs)
	}
	// Starting again while nothing is unfinished makes a new job; a
	// resumed job is not started twice.
	if err := s2.ResumeJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s2.Jobs(ctx); len(jobs) != 1 {
		t.Fatalf("%d jobs", len(jobs))
	}
}

// A job whose Vault goes away stops as failed after its retries, keeps its
// cursor, and StartRewrap continues it once Vault is back.
func TestRewrapJobVaultDown(t *testing.T) {
	v := vaultdev.Start(t)
	p := newCountingProxy(t, v.Addr())
	db := newDB(t)
	c := newClient(t, v, func(o *Options) { o.Addr = p.srv.URL; o.MaxRetries = -1 })
	s := newService(t, c, db, ServiceOptions{JobBatchSize: 2, JobRetries: 1})
	ctx := testCtx(t)
	for i := range 5 {
		if _, err := s.Put(ctx, fmt.Sprintf("user:%d", i), "default", []byte("s")); err != nil {
			t.Fatal(err)
		}
	}
	v.RotateKey(vaultdev.KeyName)
	gate := make(chan struct{})
	s.onStep = func(j JobStatus) {
		if j.Done == 2 {
			p.srv.CloseClientConnections()
			p.srv.Close() // every later request is refused
			close(gate)
		}
	}
	id, err := s.StartRewrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-gate
	j := waitJob(t, s, id)
	if j.State != JobFailed || j.Done != 2 || j.LastError == "" {
		t.Fatalf("job after Vault went away: %+v", j)
	}
	// Vault "back": point a new client at it directly.
	s2 := newService(t, newClient(t, v, nil), db, ServiceOptions{JobBatchSize: 2})
	id2, err := s2.StartRewrap(ctx)
	if err != nil || id2 != id {
		t.Fatalf("StartRewrap did not continue the failed job: %s %v", id2, err)
	}
	j = waitJob(t, s2, id)
	if j.State != JobDone || j.Done != 5 || j.Rewrapped != 5 {
		t.Fatalf("continued job %+v", j)
	}
}

func TestJobStatusUnknown(t *testing.T) {
	v := vaultdev.Start(t)
	s := newService(t, newClient(t, v, nil), newDB(t), ServiceOptions{})
	if _, err := s.JobStatus(context.Background(), "nope"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
	if _, err := s.JobStatus(context.Background(), ""); err == nil {
		t.Fatal("empty id accepted")
	}
}

// TestServiceRestoreRefusesMalformedVersionID: a restore checks the id's
// form (20 digits, as listed) before it reads the store.
func TestServiceRestoreRefusesMalformedVersionID(t *testing.T) {
	v := vaultdev.Start(t)
	db := newDB(t)
	s := newService(t, newClient(t, v, nil), db, ServiceOptions{})
	ctx := testCtx(t)
	for _, share := range []string{"share-1", "share-2"} {
		if _, err := s.Put(ctx, "user:alice", "default", []byte(share)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"", "x", "1", "0000000000000000000x", "000000000000000000001", "0000000000000000\x00001", "99999999999999999999"} {
		wantCode(t, s.RestoreVersion(ctx, "user:alice", "default", id), enclave.ErrBadVersionID.Code)
	}
	got, err := s.Get(ctx, "user:alice", "default")
	if err != nil || string(got.Reveal()) != "share-2" {
		t.Fatalf("share after refused restores: %q %v", got.Reveal(), err)
	}
}
