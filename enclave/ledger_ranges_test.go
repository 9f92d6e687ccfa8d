package enclave

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/store"
)

// lazyOpts: small ranges (many splits), every start checked range by range.
func lazyOpts() RollbackOptions { return RollbackOptions{RangeMax: 8, SyncCheck: -1} }

func rangeEntries(t *testing.T, db *store.DB) int {
	t.Helper()
	n := 0
	if err := db.View(context.Background(), func(tx *store.Tx) error {
		return tx.ForEachMeta(store.RollbackRangeKey(nil), func(store.MetaKey, []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func userName(i int) string { return fmt.Sprintf("u%03d", i) }

// fillUsers stores a key for users 0 … n-1 ("<name>-v1").
func fillUsers(t *testing.T, c *Custody, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.PutKey(context.Background(), UserOwner(userName(i)), "PASSKEY", []byte(userName(i)+"-v1"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func waitChecked(t *testing.T, rb *Rollback) RollbackStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := rb.Status()
		if !st.Checking || st.Altered != "" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background check did not finish: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRangesSplitAndCheckLazily: a store written in small ranges splits
// them as it grows; started range by range it serves at once, the
// background pass checks every range, writes after it keep the entries
// right (a full check at the next start and VerifyBackup agree).
func TestRangesSplitAndCheckLazily(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()

	rb, err := h.start(lazyOpts())
	if err != nil {
		t.Fatal(err)
	}
	c := NewCustody(h.db, h.root, CustodyOptions{})
	fillUsers(t, c, 150)
	for i := 0; i < 150; i += 10 {
		if err := c.DeleteKey(ctx, UserOwner(userName(i)), "PASSKEY"); err != nil {
			t.Fatal(err)
		}
	}
	if n := rangeEntries(t, h.db); n < 20 {
		t.Fatalf("%d range entries after 150 stores with ranges of at most 8 records; want splits", n)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	rb, err = h.start(lazyOpts())
	if err != nil {
		t.Fatal(err)
	}
	if st := rb.Status(); !st.Checking {
		t.Fatalf("a start with SyncCheck -1 checked every record: %+v", st)
	}
	c = NewCustody(h.db, h.root, CustodyOptions{})
	k, err := c.GetKey(ctx, UserOwner(userName(77)), "PASSKEY")
	if err != nil || string(k.Reveal()) != userName(77)+"-v1" {
		t.Fatalf("release during the check: %v", err)
	}
	if st := waitChecked(t, rb); st.Altered != "" {
		t.Fatalf("a clean store was reported altered: %s", st.Altered)
	}
	fillUsers(t, c, 200) // overwrites and new users, after the check
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	rb, err = h.start(RollbackOptions{RangeMax: 8}) // small store: a full check
	if err != nil {
		t.Fatalf("full check after lazy starts and splits: %v", err)
	}
	if st := rb.Status(); st.Checking || st.Records == 0 {
		t.Fatalf("status after a full check: %+v", st)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	db, err := store.Open(h.path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := VerifyBackup(ctx, sim, db)
	if err != nil || rep.Records == 0 || rep.Keys != 200 {
		t.Fatalf("VerifyBackup: %+v, %v", rep, err)
	}
}

// splicedStore makes a stopped store in which user 100's key record is
// the backup's older one (key "<u100>-v1" where the store had "-v2").
func splicedStore(t *testing.T, sim interface{ Close() error }, h *rbHost) {
	t.Helper()
	ctx := context.Background()
	rb, err := h.start(lazyOpts())
	if err != nil {
		t.Fatal(err)
	}
	c := NewCustody(h.db, h.root, CustodyOptions{})
	fillUsers(t, c, 200)
	backup := filepath.Join(t.TempDir(), "backup.db")
	h.backup(rb, backup)
	if _, err := c.PutKey(ctx, UserOwner(userName(100)), "PASSKEY", []byte("u100-v2"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()
	k := store.Key("user:"+userName(100), "PASSKEY")
	old := readFrom(t, backup, store.BucketKeys, k)
	spliceOffline(t, h.path, func(tx *store.Tx) error { return tx.Put(store.BucketKeys, k, old) })
}

func wantAltered(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrRecordsAltered) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("%s: err = %v, want ErrRecordsAltered as store.ErrUnavailable", what, err)
	}
}

// TestLazyCheckRefusesSplicedRecord: started range by range (no background
// pass), a store whose record was spliced from a backup serves other
// ranges until a read or write reaches the spliced range; that one is
// refused and never returns the old key, and from then on every read and
// write is refused until the operator accepts the store.
func TestLazyCheckRefusesSplicedRecord(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	splicedStore(t, sim, h)

	opts := lazyOpts()
	opts.noBackground = true
	rb, err := h.start(opts)
	if err != nil {
		t.Fatalf("a lazily checked start read the records: %v", err)
	}
	c := NewCustody(h.db, h.root, CustodyOptions{})
	if k, err := c.GetKey(ctx, UserOwner(userName(3)), "PASSKEY"); err != nil || string(k.Reveal()) != userName(3)+"-v1" {
		t.Fatalf("a record of an unaltered range: %v", err)
	}
	// A write into the spliced range checks it first.
	_, err = c.PutKey(ctx, UserOwner(userName(101)), "PASSKEY", []byte("u101-v2"), PutOptions{})
	wantAltered(t, "write into the spliced range", err)
	k, err := c.GetKey(ctx, UserOwner(userName(100)), "PASSKEY")
	if err == nil {
		t.Fatalf("the spliced record was released: %q", k.Reveal())
	}
	wantAltered(t, "release of the spliced record", err)
	_, err = c.GetKey(ctx, UserOwner(userName(3)), "PASSKEY")
	wantAltered(t, "release from an unaltered range after the difference was found", err)
	wantAltered(t, "heartbeat write", h.db.Writable(ctx))
	if st := rb.Status(); st.Altered == "" {
		t.Fatalf("status does not report the difference: %+v", st)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	// The operator accepts the store as it is.
	o := lazyOpts()
	o.AcceptRollback = true
	rb, err = h.start(o)
	if err != nil {
		t.Fatal(err)
	}
	if st := rb.Status(); st.Event != RollbackOverride {
		t.Fatalf("accept: %+v", st)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()
	rb, err = h.start(lazyOpts())
	if err != nil {
		t.Fatal(err)
	}
	if st := waitChecked(t, rb); st.Altered != "" {
		t.Fatalf("the accepted store: %s", st.Altered)
	}
	rb.Close()
	h.stop()
}

// TestLazyBackgroundFindsSplice: with no request at all, the background
// pass finds the spliced record and stops the store.
func TestLazyBackgroundFindsSplice(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	splicedStore(t, sim, h)

	rb, err := h.start(lazyOpts())
	if err != nil {
		t.Fatal(err)
	}
	if st := waitChecked(t, rb); st.Altered == "" {
		t.Fatalf("the background pass finished without finding the spliced record: %+v", st)
	}
	_, err = NewCustody(h.db, h.root, CustodyOptions{}).GetKey(ctx, UserOwner(userName(3)), "PASSKEY")
	wantAltered(t, "release after the background pass found the splice", err)
	rb.Close()
	h.stop()

	// A full check at start refuses the same store, as before; so does a
	// one-shot command's start (recover), whatever the store's size.
	if _, err := h.start(RollbackOptions{RangeMax: 8}); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("full check of the spliced store: %v", err)
	}
	h.stop()
	if _, err := h.start(RollbackOptions{RangeMax: 8, SyncCheck: -1, FullCheck: true}); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("FullCheck start of the spliced store: %v", err)
	}
	h.stop()
}

// TestRangeEntryTamperedRefusedAtStart: a range entry removed, or one
// brought back from the backup, changes the entries' set: refused at
// start even when the records are checked range by range.
func TestRangeEntryTamperedRefusedAtStart(t *testing.T) {
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	rb, err := h.start(lazyOpts())
	if err != nil {
		t.Fatal(err)
	}
	fillUsers(t, NewCustody(h.db, h.root, CustodyOptions{}), 60)
	rb.Close()
	h.stop()

	var victim store.MetaKey
	spliceOffline(t, h.path, func(tx *store.Tx) error {
		return tx.ForEachMeta(store.RollbackRangeKey(nil), func(k store.MetaKey, _ []byte) error {
			if victim == "" && len(k) > len(store.RollbackRangeKey(nil)) {
				victim = k
			}
			return nil
		})
	})
	spliceOffline(t, h.path, func(tx *store.Tx) error { return tx.DeleteMeta(victim) })
	if _, err := h.start(lazyOpts()); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("a range entry removed: start err = %v, want ErrRecordsAltered", err)
	}
	h.stop()
}

// writeV2Record turns the store's rollback record into the one an earlier
// build wrote (version 2: one digest of every record, no range entries).
func writeV2Record(t *testing.T, h *rbHost) {
	t.Helper()
	k := h.root.Subkey(SubkeyRollbackLedger)
	lh := newLedgerHash(k.Reveal())
	k.Wipe()
	err := h.db.Update(context.Background(), func(tx *store.Tx) error {
		b, err := tx.GetMeta(store.MetaRollback)
		if err != nil {
			return err
		}
		st, err := parseRollbackState(b)
		if err != nil {
			return err
		}
		d, _, err := lh.scan(tx)
		if err != nil {
			return err
		}
		var ranges []store.MetaKey
		if err := tx.ForEachMeta(store.RollbackRangeKey(nil), func(k store.MetaKey, _ []byte) error { ranges = append(ranges, k); return nil }); err != nil {
			return err
		}
		for _, k := range ranges {
			if err := tx.DeleteMeta(k); err != nil {
				return err
			}
		}
		st.V, st.Records = 2, lh.commitment(d)
		st.MAC = st.mac(h.root)
		v2, err := json.Marshal(st)
		if err != nil {
			return err
		}
		return tx.PutMeta(store.MetaRollback, v2)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRollbackUpgradesV2Record: a store an earlier build left (version 2,
// one digest) is checked against that digest and upgraded once to range
// entries; the same store with a spliced record is refused at that start.
func TestRollbackUpgradesV2Record(t *testing.T) {
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	rb, err := h.start(RollbackOptions{RangeMax: 8})
	if err != nil {
		t.Fatal(err)
	}
	fillUsers(t, NewCustody(h.db, h.root, CustodyOptions{}), 40)
	rb.Close()
	writeV2Record(t, h)
	if n := rangeEntries(t, h.db); n != 0 {
		t.Fatalf("the version-2 store still has %d range entries", n)
	}
	backup := filepath.Join(t.TempDir(), "v2.db")
	h.stop()
	h.snapshot(backup)

	rb, err = h.start(RollbackOptions{RangeMax: 8})
	if err != nil {
		t.Fatalf("start on a version-2 record: %v", err)
	}
	if st := rb.Status(); st.Event != RollbackUpgraded || st.Records < 40 {
		t.Fatalf("upgrade: %+v", st)
	}
	if n := rangeEntries(t, h.db); n < 5 {
		t.Fatalf("%d range entries after the upgrade of 40+ records with ranges of 8", n)
	}
	rb.Close()
	h.stop()
	rb, err = h.start(RollbackOptions{RangeMax: 8, SyncCheck: -1})
	if err != nil {
		t.Fatalf("start after the upgrade: %v", err)
	}
	if st := waitChecked(t, rb); st.Altered != "" || st.Event != RollbackAccepted {
		t.Fatalf("after the upgrade: %+v", st)
	}
	rb.Close()
	h.stop()

	// The version-2 copy with one record changed outside the appliance.
	copyFile(t, backup, h.path)
	k := store.Key("user:"+userName(7), "PASSKEY")
	spliceOffline(t, h.path, func(tx *store.Tx) error { return tx.Delete(store.BucketKeys, k) })
	if _, err := h.start(RollbackOptions{RangeMax: 8}); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("version-2 store with a record removed: err = %v, want ErrRecordsAltered", err)
	}
	h.stop()
}
