package enclave

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/store"
)

// The in-process simulator keeps no NV state across Close/Open, so these
// tests keep ONE simulator open across a simulated restart: the store and
// the Rollback are closed and opened again, the TPM is not.

// rbHost is one appliance's store and root on a TPM.
type rbHost struct {
	t    *testing.T
	tpm  transport.TPM
	path string
	db   *store.DB
	root *Root
}

// newRBHost initializes a store at path on tpm, with its rollback counter.
func newRBHost(t *testing.T, tpm transport.TPM, path string) *rbHost {
	t.Helper()
	ctx := context.Background()
	h := &rbHost{t: t, tpm: tpm, path: path, db: openDB(t, path)}
	root, raw, err := Initialize(ctx, tpm, h.db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	h.root = root
	rb, err := InitRollback(ctx, tpm, h.db, root, RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := rb.Status(); st.Event != RollbackNewCounter || !st.Available {
		t.Fatalf("InitRollback status: %+v", st)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	return h
}

// stop closes the store and wipes the root (a process exit).
func (h *rbHost) stop() {
	h.root.Close()
	h.db.Close()
}

// start opens the store and unseals the root (a process start) and
// returns OpenRollback's result.
func (h *rbHost) start(opts RollbackOptions) (*Rollback, error) {
	h.t.Helper()
	ctx := context.Background()
	h.db = openDB(h.t, h.path)
	root, err := Unseal(ctx, h.tpm, h.db)
	if err != nil {
		h.t.Fatal(err)
	}
	h.root = root
	return OpenRollback(ctx, h.tpm, h.db, root, opts)
}

func (h *rbHost) backup(rb *Rollback, to string) {
	h.t.Helper()
	rb.BeforeBackup()
	f, err := os.Create(to)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := h.db.WriteTo(f); err != nil {
		h.t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
}

// crash stops the background incrementer without flushing (a power cut).
func (r *Rollback) crash() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	close(r.done)
	r.wg.Wait()
}

func counterValue(t *testing.T, r *Rollback) uint64 {
	t.Helper()
	r.tpmMu.Lock()
	defer r.tpmMu.Unlock()
	c, err := r.read()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRollbackRestoreRefused: back up, delete a user, restore the old
// backup → start refused; with AcceptRollback it starts and records a new
// baseline, after which a plain start works.
func TestRollbackRestoreRefused(t *testing.T) {
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
	for _, u := range []string{"alice", "bob"} {
		if _, err := c.PutKey(ctx, UserOwner(u), "PASSKEY", []byte(u+"-key"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	backup := filepath.Join(dir, "backup.db")
	h.backup(rb, backup)
	if _, err := c.DeleteOwner(ctx, UserOwner("bob")); err != nil {
		t.Fatal(err)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	// Restore the old backup in place.
	copyFile(t, backup, h.path)
	_, err = h.start(RollbackOptions{})
	var re *RollbackError
	if !errors.Is(err, ErrRolledBack) || !errors.As(err, &re) || re.Store >= re.Counter {
		t.Fatalf("start on a restored old backup: err = %v, want ErrRolledBack with store < counter", err)
	}
	h.stop()

	// The operator's override.
	rb, err = h.start(RollbackOptions{AcceptRollback: true})
	if err != nil {
		t.Fatalf("AcceptRollback: %v", err)
	}
	st := rb.Status()
	if st.Event != RollbackOverride || st.Generation != st.Counter || st.Detail == "" {
		t.Fatalf("status after override: %+v", st)
	}
	// Bob is back, as the operator chose.
	if _, err := NewCustody(h.db, h.root, CustodyOptions{}).GetKey(ctx, UserOwner("bob"), "PASSKEY"); err != nil {
		t.Fatalf("restored key: %v", err)
	}
	rb.Close()
	h.stop()

	// The new baseline holds: a plain start is accepted.
	rb, err = h.start(RollbackOptions{})
	if err != nil {
		t.Fatalf("start after the override: %v", err)
	}
	if rb.Status().Event != RollbackAccepted {
		t.Fatalf("status: %+v", rb.Status())
	}
	rb.Close()
	h.stop()
}

// touch makes one change to a covered bucket (a sign-counter update).
var touches int

func touch(t testing.TB, db *store.DB) {
	t.Helper()
	touches++
	v := fmt.Appendf(nil, `{"signCount":%d}`, touches)
	if err := db.Update(context.Background(), func(tx *store.Tx) error { return tx.Put(store.BucketCredentials, []byte("cred-touch"), v) }); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackRestartAndCatchUp: a clean restart is accepted; an increment
// lost in a crash is made at the next start.
func TestRollbackRestartAndCatchUp(t *testing.T) {
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()

	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g0 := rb.Status().Generation
	touch(t, h.db)
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	// A long interval keeps the background increment from landing
	// before the simulated crash.
	rb, err = h.start(RollbackOptions{Interval: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	st := rb.Status()
	if st.Event != RollbackAccepted || st.Generation != g0+1 || st.Counter != g0+1 {
		t.Fatalf("after a clean restart: %+v (g0 %d)", st, g0)
	}
	// A destructive change, then a crash before the increment.
	touch(t, h.db)
	rb.crash()
	if c := counterValue(t, rb); c != g0+1 {
		t.Fatalf("counter moved without a flush: %d", c)
	}
	h.stop()

	rb, err = h.start(RollbackOptions{})
	if err != nil {
		t.Fatalf("start after a crash: %v", err)
	}
	st = rb.Status()
	if st.Event != RollbackCaughtUp || st.Generation != g0+2 || counterValue(t, rb) != g0+2 {
		t.Fatalf("after a crash: %+v", st)
	}
	rb.Close()
	h.stop()
}

// TestRollbackCoalescing: changes while an increment is pending share its
// generation; BeforeBackup starts a new one; a change sends no TPM
// command.
func TestRollbackCoalescing(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	counting := tpmdev.NewCounting(sim)
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	h.tpm = counting
	// A long interval: the background goroutine does not fire during the
	// test (the test never depends on it firing).
	rb, err := h.start(RollbackOptions{Interval: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	g0 := rb.Status().Generation

	// The first change after start has nothing pending: it takes the
	// next generation and kicks the incrementer, which waits for the
	// interval (counted from the start's own NV writes); Flush does not.
	touch(t, h.db)
	if err := rb.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	g1 := rb.Status().Generation
	if g1 != g0+1 || counterValue(t, rb) != g1 {
		t.Fatalf("first change: gen %d counter %d, want %d", g1, counterValue(t, rb), g0+1)
	}
	// Hold the incrementer off (it takes tpmMu) while three changes land.
	rb.tpmMu.Lock()
	before := counting.Count()
	for range 3 {
		touch(t, h.db)
	}
	if n := counting.Count() - before; n != 0 {
		t.Fatalf("three changes sent %d TPM commands", n)
	}
	if g := rb.Status().Generation; g != g1+1 {
		t.Fatalf("three coalesced changes: gen %d, want %d", g, g1+1)
	}
	// A backup closes the generation: the next change takes a new one.
	rb.BeforeBackup()
	touch(t, h.db)
	if g := rb.Status().Generation; g != g1+2 {
		t.Fatalf("after BeforeBackup: gen %d, want %d", g, g1+2)
	}
	rb.tpmMu.Unlock()
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()
	rb, err = h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := rb.Status(); st.Event != RollbackAccepted || st.Counter != g1+2 {
		t.Fatalf("Close should have flushed the counter to %d: %+v", g1+2, st)
	}
	rb.Close()
	h.stop()
}

// TestRollbackRecordTampered: a rollback record edited without the root
// key, or removed, is refused.
func TestRollbackRecordTampered(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))

	// Raise the generation without the MAC key (to pass a rollback off as
	// current).
	err := h.db.Update(ctx, func(tx *store.Tx) error {
		b, err := tx.GetMeta(store.MetaRollback)
		if err != nil {
			return err
		}
		var st rollbackState
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		st.Generation += 100
		nb, _ := json.Marshal(st)
		return tx.PutMeta(store.MetaRollback, nb)
	})
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRollbackRecord) {
		t.Fatalf("edited record: err = %v, want ErrRollbackRecord", err)
	}
	// Remove it.
	if err := h.db.Update(ctx, func(tx *store.Tx) error { return tx.DeleteMeta(store.MetaRollback) }); err != nil {
		t.Fatal(err)
	}
	h.stop()
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRollbackRecord) {
		t.Fatalf("removed record: err = %v, want ErrRollbackRecord", err)
	}
	h.stop()
	rb, err := h.start(RollbackOptions{AcceptRollback: true})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Status().Event != RollbackOverride {
		t.Fatalf("status: %+v", rb.Status())
	}
	rb.Close()
	h.stop()
}

// undefineCounter removes the counter with owner authorization.
func undefineCounter(t *testing.T, tpm transport.TPM, index uint32) {
	t.Helper()
	rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.NVUndefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: rsp.NVName},
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

// defineForeignCounter puts a counter with another authValue at index.
func defineForeignCounter(t *testing.T, tpm transport.TPM, index uint32) {
	t.Helper()
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		Auth:       tpm2.TPM2BAuth{Buffer: []byte("someone else")},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMHandle(index), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, NT: tpm2.TPMNTCounter, NoDA: true},
			DataSize:   8,
		}),
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

// TestRollbackCounterRemoved: a counter deleted from the same TPM, or
// replaced by one this root key did not make, is refused; dev mode and the
// override define a new one.
func TestRollbackCounterRemoved(t *testing.T) {
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()

	undefineCounter(t, sim, DefaultCounterIndex)
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("deleted counter: err = %v, want ErrRolledBack", err)
	}
	h.stop()
	rb, err := h.start(RollbackOptions{Dev: true})
	if err != nil {
		t.Fatalf("dev mode, counter gone (simulator restart): %v", err)
	}
	if st := rb.Status(); st.Event != RollbackNewCounter || st.Detail == "" {
		t.Fatalf("dev status: %+v", st)
	}
	rb.Close()
	h.stop()

	undefineCounter(t, sim, DefaultCounterIndex)
	defineForeignCounter(t, sim, DefaultCounterIndex)
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("replaced counter: err = %v, want ErrRolledBack", err)
	}
	h.stop()
	rb, err = h.start(RollbackOptions{AcceptRollback: true})
	if err != nil {
		t.Fatalf("override on a replaced counter: %v", err)
	}
	if rb.Status().Event != RollbackOverride {
		t.Fatalf("status: %+v", rb.Status())
	}
	rb.Close()
	h.stop()
	rb, err = h.start(RollbackOptions{})
	if err != nil {
		t.Fatalf("start after replacing the counter: %v", err)
	}
	rb.Close()
	h.stop()
	undefineCounter(t, sim, DefaultCounterIndex)
}

// TestInitRollbackReplacesStaleCounter: a counter left at the index by an
// earlier installation (another root key) is replaced at init.
func TestInitRollbackReplacesStaleCounter(t *testing.T) {
	sim := openSim(t, testSeed)
	defer sim.Close()
	defineForeignCounter(t, sim, DefaultCounterIndex)
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db")) // asserts RollbackNewCounter
	h.stop()
	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rb.Close()
	h.stop()
	undefineCounter(t, sim, DefaultCounterIndex)

	// Another index in use by something that is not a counter is left
	// alone.
	const idx = 0x01800021
	_, err = tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   8,
		}),
	}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, filepath.Join(t.TempDir(), "k2.db"))
	defer db.Close()
	root, raw, err := Initialize(context.Background(), sim, db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	defer root.Close()
	if _, err := InitRollback(context.Background(), sim, db, root, RollbackOptions{NVIndex: idx}); err == nil {
		t.Fatal("InitRollback took over an ordinary NV index")
	}
	undefineCounter(t, sim, idx)
}

// TestRollbackSwtpmRestart runs the rollback test across a real TPM
// process restart: swtpm keeps its NV state in a folder.
func TestRollbackSwtpmRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	state := filepath.Join(dir, "tpmstate")
	open := func(sw *swtpmtest.TPM) transport.TPMCloser {
		tpm, err := tpmdev.Open(ctx, sw.Spec)
		if err != nil {
			t.Fatalf("open swtpm: %v\n%s", err, sw.Log())
		}
		return tpm
	}
	sw := swtpmtest.Start(t, swtpmtest.Options{StateDir: state})
	tpm := open(sw)
	h := newRBHost(t, tpm, filepath.Join(dir, "k.db"))
	h.stop()
	rb, err := h.start(RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	h.backup(rb, backup)
	c := NewCustody(h.db, h.root, CustodyOptions{})
	if _, err := c.PutKey(ctx, UserOwner("carol"), "PASSKEY", []byte("carol-key"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteKey(ctx, UserOwner("carol"), "PASSKEY"); err != nil {
		t.Fatal(err)
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()
	tpm.Close()
	sw.Stop()

	// A new TPM process on the same state: the counter survived.
	sw = swtpmtest.Start(t, swtpmtest.Options{StateDir: state})
	tpm = open(sw)
	defer tpm.Close()
	h.tpm = tpm
	rb, err = h.start(RollbackOptions{})
	if err != nil {
		t.Fatalf("start after a TPM restart: %v", err)
	}
	if rb.Status().Event != RollbackAccepted {
		t.Fatalf("status: %+v", rb.Status())
	}
	rb.Close()
	h.stop()
	copyFile(t, backup, h.path)
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("restored backup after a TPM restart: err = %v, want ErrRolledBack", err)
	}
	h.stop()
}

// BenchmarkChange is the cost a change pays for rollback detection: one
// store update whose transaction also rewrites the rollback record (digest
// and generation), no TPM command (the increment is coalesced in the
// background).
func BenchmarkChange(b *testing.B) {
	ctx := context.Background()
	sim := openSim(b, testSeed)
	defer sim.Close()
	db := openDB(b, filepath.Join(b.TempDir(), "k.db"))
	defer db.Close()
	root, raw, err := Initialize(ctx, sim, db, InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	raw.Wipe()
	defer root.Close()
	rb, err := InitRollback(ctx, sim, db, root, RollbackOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer rb.Close()
	for b.Loop() {
		rb.BeforeBackup() // every change takes a new generation: the worst case
		touch(b, db)
	}
}
