package enclave

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/store"
)

// putRaw writes one record through the store API.
func putRaw(t *testing.T, db *store.DB, b store.Bucket, k, v string) {
	t.Helper()
	if err := db.Update(context.Background(), func(tx *store.Tx) error { return tx.Put(b, []byte(k), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}

// readFrom reads one record of the store file at path (opened read-only).
func readFrom(t *testing.T, path string, b store.Bucket, k []byte) []byte {
	t.Helper()
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	if err := db.View(context.Background(), func(tx *store.Tx) (err error) { v, err = tx.Get(b, k); return }); err != nil {
		t.Fatal(err)
	}
	return v
}

// spliceOffline writes into the store file of a stopped appliance with the
// store API alone (no root key, no rollback state): what someone with the
// disk can do.
func spliceOffline(t *testing.T, path string, fn func(tx *store.Tx) error) {
	t.Helper()
	db := openDB(t, path)
	defer db.Close()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func (h *rbHost) snapshot(to string) {
	h.t.Helper()
	copyFile(h.t, h.path, to) // the store is closed: a plain file copy
}

// TestSplicedKeyRecordRefused: a key overwritten after a backup, then the
// backup's (older, validly sealed) record copied over the current one in
// the file of the stopped appliance: the start is refused with
// ErrRecordsAltered, and the old key is never released.
func TestSplicedKeyRecordRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	h.stop()

	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCustody(h.db, h.root, CustodyOptions{})
	if _, err := c.PutKey(ctx, UserOwner("alice"), "PASSKEY", []byte("alice-v1"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	h.backup(rb, backup)
	if _, err := c.PutKey(ctx, UserOwner("alice"), "PASSKEY", []byte("alice-v2"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	// The attacker copies version 1 over version 2.
	k := store.Key("user:alice", "PASSKEY")
	old := readFrom(t, backup, store.BucketKeys, k)
	spliceOffline(t, h.path, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, k, old) })

	rb, err = h.start(RollbackOptions{})
	if err == nil {
		got, gerr := NewCustody(h.db, h.root, CustodyOptions{}).GetKey(ctx, UserOwner("alice"), "PASSKEY")
		var rel string
		if gerr == nil {
			rel = string(got.Reveal())
		}
		rb.Close()
		h.stop()
		t.Fatalf("the store with a spliced key record started, and the release gave %q (err %v); want ErrRecordsAltered at start", rel, gerr)
	}
	if !errors.Is(err, ErrRecordsAltered) || !strings.Contains(err.Error(), "rollback accept") {
		t.Fatalf("spliced key record: err = %v, want ErrRecordsAltered naming the override", err)
	}
	h.stop()
}

// TestSplicedRecordsRefused: the same for custodian shares, client shares,
// passkey credentials (an older sign counter), block-list entries, and for
// a record added back after its deletion or removed.
func TestSplicedRecordsRefused(t *testing.T) {
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	h.stop()
	cases := []struct {
		name   string
		b      store.Bucket
		k      string
		v1, v2 string // v2 "": deleted after the backup
		remove bool   // the attacker removes the current record instead
	}{
		{"custodian share", store.BucketCustodian, "user:bob\x00PASSKEY", `{"ct":"vault:v1:old"}`, `{"ct":"vault:v2:new"}`, false},
		{"client share", store.BucketClientShares, "portal:c1\x00user\x00GDRIVE", `{"share":"old"}`, `{"share":"new"}`, false},
		{"credential with an older sign counter", store.BucketCredentials, "cred-1", `{"user":"bob","signCount":5}`, `{"user":"bob","signCount":9}`, false},
		{"deleted key record added back", store.BucketKeys, "user:carol\x00PASSKEY", `{"s":"old"}`, "", false},
		{"block-list entry removed", store.BucketBlocked, "firebase:p//mallory", `{"at":"2025"}`, `{"at":"2025"}`, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			rb, err := h.start(RollbackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			putRaw(t, h.db, tc.b, tc.k, tc.v1)
			backup := filepath.Join(dir, fmt.Sprintf("backup%d.db", i))
			h.backup(rb, backup)
			if tc.v2 == "" {
				if err := h.db.Update(context.Background(), func(tx *store.Tx) error { return tx.Delete(tc.b, []byte(tc.k)) }); err != nil {
					t.Fatal(err)
				}
			} else {
				putRaw(t, h.db, tc.b, tc.k, tc.v2)
			}
			if err := rb.Close(); err != nil {
				t.Fatal(err)
			}
			h.stop()
			good := filepath.Join(dir, fmt.Sprintf("good%d.db", i))
			h.snapshot(good)

			old := readFrom(t, backup, tc.b, []byte(tc.k))
			spliceOffline(t, h.path, func(tx *store.Tx) error {
				if tc.remove {
					return tx.Delete(tc.b, []byte(tc.k))
				}
				return tx.Put(tc.b, []byte(tc.k), old)
			})
			rb, err = h.start(RollbackOptions{})
			if err == nil {
				rb.Close()
				h.stop()
				t.Fatal("the altered store started; want ErrRecordsAltered")
			}
			if !errors.Is(err, ErrRecordsAltered) {
				t.Fatalf("err = %v, want ErrRecordsAltered", err)
			}
			h.stop()
			copyFile(t, good, h.path) // the untouched store starts
			rb, err = h.start(RollbackOptions{})
			if err != nil {
				t.Fatalf("the untouched store: %v", err)
			}
			rb.Close()
			h.stop()
		})
	}
}

// TestRollbackAcceptRecordsDigest: the operator's override accepts a store
// whose records were altered and records its digest, so the next plain
// start is accepted; the override is reported for the audit line.
func TestRollbackAcceptRecordsDigest(t *testing.T) {
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	h.stop()
	spliceOffline(t, h.path, func(tx *store.Tx) error {
		return tx.Put(store.BucketCredentials, []byte("cred-x"), []byte(`{"user":"eve"}`))
	})
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("added record: err = %v, want ErrRecordsAltered", err)
	}
	h.stop()
	rb, err := h.start(RollbackOptions{AcceptRollback: true})
	if err != nil {
		t.Fatalf("AcceptRollback: %v", err)
	}
	if st := rb.Status(); st.Event != RollbackOverride || !strings.Contains(st.Detail, "records") {
		t.Fatalf("status after the override: %+v", st)
	}
	rb.Close()
	h.stop()
	rb, err = h.start(RollbackOptions{})
	if err != nil {
		t.Fatalf("start after the override: %v", err)
	}
	if st := rb.Status(); st.Event != RollbackAccepted {
		t.Fatalf("status: %+v", st)
	}
	rb.Close()
	h.stop()
}

// TestRollbackEveryChangeAdvances: a store copied before a key overwrite,
// a block-list entry or a sign-counter update, put back once the
// increment has landed, is refused as rolled back. (Flush stands for the
// interval passing: no test waits on a clock.)
func TestRollbackEveryChangeAdvances(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	h.stop()
	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCustody(h.db, h.root, CustodyOptions{})
	if _, err := c.PutKey(ctx, UserOwner("dave"), "PASSKEY", []byte("dave-v1"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	putRaw(t, h.db, store.BucketCredentials, "cred-d", `{"user":"dave","signCount":1}`)
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	changes := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"key overwrite", func(t *testing.T) {
			if _, err := NewCustody(h.db, h.root, CustodyOptions{}).PutKey(ctx, UserOwner("dave"), "PASSKEY", []byte("dave-v2"), PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"block", func(t *testing.T) { putRaw(t, h.db, store.BucketBlocked, "firebase:p//dave", `{"by":"admin"}`) }},
		{"sign-counter update", func(t *testing.T) {
			putRaw(t, h.db, store.BucketCredentials, "cred-d", `{"user":"dave","signCount":2}`)
		}},
	}
	for i, ch := range changes {
		t.Run(ch.name, func(t *testing.T) {
			h.t = t
			copied := filepath.Join(dir, fmt.Sprintf("copy%d.db", i))
			h.snapshot(copied) // a disk copy: no BeforeBackup
			rb, err := h.start(RollbackOptions{Interval: 1 << 40})
			if err != nil {
				t.Fatal(err)
			}
			ch.do(t)
			if err := rb.Flush(ctx); err != nil { // the interval has passed
				t.Fatal(err)
			}
			if err := rb.Close(); err != nil {
				t.Fatal(err)
			}
			h.stop()
			live := filepath.Join(dir, fmt.Sprintf("live%d.db", i))
			h.snapshot(live)
			copyFile(t, copied, h.path)
			rb, err = h.start(RollbackOptions{})
			if err == nil {
				rb.Close()
			}
			h.stop()
			copyFile(t, live, h.path)
			var re *RollbackError
			if !errors.Is(err, ErrRolledBack) || !errors.As(err, &re) || re.Store >= re.Counter {
				t.Fatalf("store copied before the %s and put back: err = %v, want ErrRolledBack", ch.name, err)
			}
		})
	}
}

// nvIncrements counts TPM2_NV_Increment commands on the way to the TPM.
type nvIncrements struct {
	tpm transport.TPM
	n   atomic.Int64
	all atomic.Int64
}

func (c *nvIncrements) Send(cmd []byte) ([]byte, error) {
	c.all.Add(1)
	if len(cmd) >= 10 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCNVIncrement {
		c.n.Add(1)
	}
	return c.tpm.Send(cmd)
}

// TestRollbackCoalescesConcurrentWrites: 1,000 concurrent writes inside one
// interval send no TPM command themselves and cost at most two NV
// increments, and at least one (the writes are covered).
func TestRollbackCoalescesConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	counting := &nvIncrements{tpm: sim}
	h.tpm = counting
	rb, err := h.start(RollbackOptions{Interval: 1 << 40}) // the interval does not end during the test
	if err != nil {
		t.Fatal(err)
	}
	before, beforeAll := counting.n.Load(), counting.all.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := fmt.Sprintf("cred-%d", i%50)
			errs <- h.db.Update(ctx, func(tx *store.Tx) error {
				return tx.Put(store.BucketCredentials, []byte(k), fmt.Appendf(nil, `{"signCount":%d}`, i))
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := counting.all.Load() - beforeAll; n != 0 {
		t.Fatalf("the writes sent %d TPM commands", n)
	}
	if err := rb.Close(); err != nil { // flushes what is pending
		t.Fatal(err)
	}
	n := counting.n.Load() - before
	if n < 1 || n > 2 {
		t.Fatalf("1,000 writes in one interval made %d NV increments, want 1 or 2", n)
	}
	if got := rb.Increments(); got != uint64(n) {
		t.Fatalf("Increments() = %d, the TPM saw %d", got, n)
	}
	h.stop()
}

// writeV1Record replaces the rollback record by a version-1 record (no
// digest) with the same fields, validly MACed: a store written by an
// earlier build.
func writeV1Record(t *testing.T, h *rbHost) []byte {
	t.Helper()
	var v1 []byte
	err := h.db.Update(context.Background(), func(tx *store.Tx) error {
		b, err := tx.GetMeta(store.MetaRollback)
		if err != nil {
			return err
		}
		st, err := parseRollbackState(b)
		if err != nil {
			return err
		}
		st.V, st.Records = 1, nil
		st.MAC = st.mac(h.root)
		if v1, err = json.Marshal(st); err != nil {
			return err
		}
		return tx.PutMeta(store.MetaRollback, v1)
	})
	if err != nil {
		t.Fatal(err)
	}
	return v1
}

// TestRollbackUpgradesV1Record: a version-1 record is upgraded once (digest
// recorded, new generation, counter incremented); a version-1 record put
// back afterwards (to skip the digest check) is older than the counter.
func TestRollbackUpgradesV1Record(t *testing.T) {
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	putRaw(t, h.db, store.BucketCredentials, "cred-u", `{"signCount":1}`)
	v1 := writeV1Record(t, h)
	h.stop()

	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatalf("start on a version-1 record: %v", err)
	}
	st := rb.Status()
	g0, _ := parseRollbackState(v1)
	if st.Event != RollbackUpgraded || st.Generation != g0.Generation+1 || counterValue(t, rb) != st.Generation || st.Records != 1 {
		t.Fatalf("upgrade: %+v (v1 generation %d)", st, g0.Generation)
	}
	rb.Close()
	h.stop()
	rb, err = h.start(RollbackOptions{})
	if err != nil || rb.Status().Event != RollbackAccepted {
		t.Fatalf("start after the upgrade: %v", err)
	}
	rb.Close()
	h.stop()

	// Downgrade: the old version-1 record and an older credential.
	spliceOffline(t, h.path, func(tx *store.Tx) error {
		if err := tx.Put(store.BucketCredentials, []byte("cred-u"), []byte(`{"signCount":0}`)); err != nil {
			return err
		}
		return tx.PutMeta(store.MetaRollback, v1)
	})
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("version-1 record put back: err = %v, want ErrRolledBack", err)
	}
	h.stop()
}

// BenchmarkRecordScan is the start-time check's cost per record: the
// digest over every covered record.
func BenchmarkRecordScan(b *testing.B) {
	ctx := context.Background()
	db := openDB(b, filepath.Join(b.TempDir(), "k.db"))
	defer db.Close()
	val := make([]byte, 200) // about a key record's size
	const n = 100_000
	for i := 0; i < n; i += 10_000 {
		err := db.Update(ctx, func(tx *store.Tx) error {
			for j := i; j < i+10_000; j++ {
				if err := tx.Put(store.BucketKeys, store.Key(fmt.Sprintf("user:%08d", j), "PASSKEY"), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	h := newLedgerHash(make([]byte, 32))
	for b.Loop() {
		err := db.View(ctx, func(tx *store.Tx) error {
			_, got, err := h.scan(tx)
			if got != n {
				b.Fatalf("scanned %d", got)
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/record")
}

// TestVerifyBackupChecksRecords: `backup -verify` refuses a backup whose
// records were altered after it was written (here a credential with an
// older sign counter: every key still opens).
func TestVerifyBackupChecksRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	h.stop()
	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	putRaw(t, h.db, store.BucketCredentials, "cred-v", `{"signCount":7}`)
	backup := filepath.Join(dir, "backup.db")
	h.backup(rb, backup)
	rb.Close()
	h.stop()
	verify := func() error {
		db, err := store.Open(backup, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		_, err = VerifyBackup(ctx, sim, db)
		return err
	}
	if err := verify(); err != nil {
		t.Fatalf("untouched backup: %v", err)
	}
	spliceOffline(t, backup, func(tx *store.Tx) error {
		return tx.Put(store.BucketCredentials, []byte("cred-v"), []byte(`{"signCount":3}`))
	})
	if err := verify(); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("altered backup: err = %v, want ErrRecordsAltered", err)
	}
}
