package enclave

import (
	"bytes"
	"context"
	"crypto/hpke"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/store"
)

const testSeed = 42

func openSim(t testing.TB, seed int64) *tpmsim.Sim {
	t.Helper()
	sim, err := tpmsim.Open(seed)
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

func openDB(t testing.TB, path string) *store.DB {
	t.Helper()
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func extendPCR(t testing.TB, tpm transport.TPM, pcr int) {
	t.Helper()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{1}, 32)}}},
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

func assertNoTransientHandles(t testing.TB, tpm transport.TPM) {
	t.Helper()
	h, err := tpmdev.TransientHandles(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 0 {
		t.Fatalf("leaked %d transient handles", len(h))
	}
}

// TestInitRestartUnseal: init → restart → unseal → the same records open.
func TestInitRestartUnseal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	sim := openSim(t, testSeed)
	db := openDB(t, path)
	root, raw, err := Initialize(ctx, sim, db, InitOptions{PCRs: []int{7, 16}})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	assertNoTransientHandles(t, sim)
	c := NewCustody(db, root, CustodyOptions{})
	if _, err := c.PutKey(ctx, UserOwner("alice"), "PASSKEY", []byte("alice-key-0123456789abcdef012345"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Initialize(ctx, sim, db, InitOptions{}); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second init: %v", err)
	}
	root.Close()
	db.Close()
	sim.Close()

	// "Restart": a new simulator process state with the same seeds.
	sim = openSim(t, testSeed)
	defer sim.Close()
	db = openDB(t, path)
	defer db.Close()
	root, err = Unseal(ctx, sim, db)
	if err != nil {
		t.Fatalf("unseal after restart: %v", err)
	}
	assertNoTransientHandles(t, sim)
	c = NewCustody(db, root, CustodyOptions{})
	k, err := c.GetKey(ctx, UserOwner("alice"), "PASSKEY")
	if err != nil || string(k.Reveal()) != "alice-key-0123456789abcdef012345" {
		t.Fatalf("key after restart: %v", err)
	}
}

// TestPCRChangeRefusesUnseal: a PCR extended after init stops the unseal;
// nothing is destroyed, and with the PCR state restored it unseals again.
func TestPCRChangeRefusesUnseal(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer func() { sim.Close() }()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	root, raw, err := Initialize(ctx, sim, db, InitOptions{PCRs: []int{16}})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	root.Close()
	if r, err := Unseal(ctx, sim, db); err != nil {
		t.Fatalf("unseal in the sealed state: %v", err)
	} else {
		r.Close()
	}
	extendPCR(t, sim, 16)
	if _, err := Unseal(ctx, sim, db); !errors.Is(err, ErrPolicyMismatch) {
		t.Fatalf("unseal after PCR change: %v, want ErrPolicyMismatch", err)
	}
	assertNoTransientHandles(t, sim)
	if _, err := LoadSealedRoot(ctx, db); err != nil {
		t.Fatalf("sealed root destroyed: %v", err)
	}
	// After a reboot (PCRs back to their initial values) it unseals again,
	// and a PCR outside the policy does not matter.
	sim.Close()
	sim = openSim(t, testSeed)
	extendPCR(t, sim, 15)
	if r, err := Unseal(ctx, sim, db); err != nil {
		t.Fatalf("unseal after reboot (PCR 16 reset): %v", err)
	} else {
		r.Close()
	}
}

// TestOtherTPMCannotUnseal: a sealed blob does not unseal on a TPM with
// other seeds (a stolen disk yields nothing).
func TestOtherTPMCannotUnseal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	sim := openSim(t, testSeed)
	db := openDB(t, path)
	root, raw, err := Initialize(ctx, sim, db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	root.Close()
	sim.Close()
	sim = openSim(t, testSeed+1)
	defer sim.Close()
	defer db.Close()
	if r, err := Unseal(ctx, sim, db); err == nil {
		r.Close()
		t.Fatal("another TPM unsealed the root key")
	}
}

func testRoot(t testing.TB) *Root {
	r, err := NewRoot(NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRecordBinding(t *testing.T) {
	r := testRoot(t)
	b := Binding{Kind: "key", Owner: UserOwner("alice"), Method: "PASSKEY", Version: 3}
	sealed, err := r.Seal(b, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := r.Open(b, sealed); err != nil || string(pt) != "secret" {
		t.Fatalf("open: %q %v", pt, err)
	}
	bad := map[string]Binding{
		"other owner":   {Kind: "key", Owner: UserOwner("mallory"), Method: "PASSKEY", Version: 3},
		"other method":  {Kind: "key", Owner: UserOwner("alice"), Method: "FIREBASE", Version: 3},
		"other kind":    {Kind: "share", Owner: UserOwner("alice"), Method: "PASSKEY", Version: 3},
		"other version": {Kind: "key", Owner: UserOwner("alice"), Method: "PASSKEY", Version: 2},
	}
	for name, bb := range bad {
		if _, err := r.Open(bb, sealed); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v, want ErrOpen", name, err)
		}
	}
	for i := range sealed {
		mut := bytes.Clone(sealed)
		mut[i] ^= 0x40
		if _, err := r.Open(b, mut); err == nil {
			t.Fatalf("flipped byte %d still opens", i)
		}
	}
	if _, err := testRoot(t).Open(b, sealed); !errors.Is(err, ErrOpen) {
		t.Fatal("opened under another root key")
	}
	s2, _ := r.Seal(b, []byte("secret"))
	if bytes.Equal(s2, sealed) {
		t.Fatal("two seals are identical: salt or nonce not fresh")
	}
}

// TestCopiedRecordFailsToOpen: a sealed record copied in the store under
// another user id does not open.
func TestCopiedRecordFailsToOpen(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	if _, err := c.PutKey(ctx, UserOwner("alice"), "PASSKEY", []byte("alice's key"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	err := db.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketKeys, store.Key("user:alice", "PASSKEY"))
		if err != nil {
			return err
		}
		return tx.Put(store.BucketKeys, store.Key("user:mallory", "PASSKEY"), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKey(ctx, UserOwner("mallory"), "PASSKEY"); !errors.Is(err, ErrOpen) {
		t.Fatalf("copied record: %v, want ErrOpen", err)
	}
}

func TestCustodyOverwriteVersionsRestore(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCustody(db, testRoot(t), CustodyOptions{VersionRetention: time.Hour, Clock: func() time.Time { return now }})
	o := Owner("firebase:p//u1")
	if rep, err := c.PutKey(ctx, o, "FIREBASE", []byte("v1"), PutOptions{}); err != nil || rep {
		t.Fatalf("first put: %v %v", rep, err)
	}
	now = now.Add(time.Minute)
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("v2"), PutOptions{NoOverwrite: true}); !errors.Is(err, apierr.ErrKeyExists) {
		t.Fatalf("NoOverwrite: %v", err)
	}
	if rep, err := c.PutKey(ctx, o, "FIREBASE", []byte("v2"), PutOptions{}); err != nil || !rep {
		t.Fatalf("overwrite: %v %v", rep, err)
	}
	vs, err := c.ListVersions(ctx, o, "FIREBASE")
	if err != nil || len(vs) != 1 {
		t.Fatalf("versions: %v %v", vs, err)
	}
	if !vs[0].ReplacedAt.Equal(now) {
		t.Fatalf("ReplacedAt = %v, want %v", vs[0].ReplacedAt, now)
	}
	if err := c.RestoreVersion(ctx, o, "FIREBASE", vs[0].ID); err != nil {
		t.Fatal(err)
	}
	k, info, err := c.Lookup(ctx, o, "FIREBASE")
	if err != nil || string(k.Reveal()) != "v1" || info.Version != 3 {
		t.Fatalf("after restore: %q %+v %v", k.Reveal(), info, err)
	}
	// Retention: versions older than an hour are pruned at the next write.
	now = now.Add(2 * time.Hour)
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("v4"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	vs, _ = c.ListVersions(ctx, o, "FIREBASE")
	if len(vs) != 1 {
		t.Fatalf("retention kept %d versions, want 1 (the newest)", len(vs))
	}
	if err := c.DeleteKey(ctx, o, "FIREBASE"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKey(ctx, o, "FIREBASE"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if vs, _ := c.ListVersions(ctx, o, "FIREBASE"); len(vs) != 0 {
		t.Fatal("delete kept prior versions")
	}
	if err := c.DeleteKey(ctx, o, "FIREBASE"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestPutKeyValidation(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	cases := map[string]struct {
		o Owner
		m string
		k []byte
	}{
		"empty key":    {UserOwner("a"), "M", nil},
		"huge key":     {UserOwner("a"), "M", make([]byte, MaxKeyBytes+1)},
		"no method":    {UserOwner("a"), "", []byte("k")},
		"NUL in owner": {Owner("user:a\x00b"), "M", []byte("k")},
		"bare owner":   {Owner("alice"), "M", []byte("k")},
	}
	for name, tc := range cases {
		if _, err := c.PutKey(ctx, tc.o, tc.m, tc.k, PutOptions{}); err == nil {
			t.Errorf("%s accepted", name)
		} else if e, ok := apierr.As(err); !ok || e.Status != 400 {
			t.Errorf("%s: %v, want a 400", name, err)
		}
	}
}

// TestNoTPMCommandsOnHotPath stores and opens 10,000 records and asserts
// that the TPM command count did not move.
func TestNoTPMCommandsOnHotPath(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	counting := tpmdev.NewCounting(sim)
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	root, raw, err := Initialize(ctx, counting, db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	if counting.Count() == 0 {
		t.Fatal("the counter saw no TPM commands during init; it is not wired")
	}
	before := counting.Count()
	c := NewCustody(db, root, CustodyOptions{})
	const n = 10000
	errs := make(chan error, 16)
	for w := range 16 {
		go func() {
			for i := w; i < n; i += 16 {
				if _, err := c.PutKey(ctx, UserOwner(fmt.Sprint(i)), "PASSKEY", []byte(fmt.Sprint("key-", i)), PutOptions{}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		k, err := c.GetKey(ctx, UserOwner(fmt.Sprint(i)), "PASSKEY")
		if err != nil || string(k.Reveal()) != fmt.Sprint("key-", i) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if got := counting.Count(); got != before {
		t.Fatalf("%d TPM commands during %d stores and releases; want 0", got-before, n)
	}
}

func TestHPKE(t *testing.T) {
	for name, kem := range map[string]hpke.KEM{"x25519": hpke.DHKEM(ecdhX25519()), "mlkem768x25519": hpke.MLKEM768X25519()} {
		t.Run(name, func(t *testing.T) {
			priv, err := kem.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			info := []byte("keywarden release v1|ceremony-1")
			enc, ct, suite, err := SealToRecipient(priv.PublicKey().Bytes(), []byte("the key"), info)
			if err != nil {
				t.Fatal(err)
			}
			if suite == "" || bytes.Contains(ct, []byte("the key")) {
				t.Fatal("not encrypted")
			}
			pt, err := OpenFromRecipient(priv, enc, ct, info)
			if err != nil || string(pt) != "the key" {
				t.Fatalf("open: %v", err)
			}
			if _, err := OpenFromRecipient(priv, enc, ct, []byte("other info")); err == nil {
				t.Fatal("opened with other info")
			}
			other, _ := kem.GenerateKey()
			if _, err := OpenFromRecipient(other, enc, ct, info); err == nil {
				t.Fatal("opened with another private key")
			}
		})
	}
	for _, n := range []int{0, 31, 33, 65, 1215} {
		if _, _, _, err := SealToRecipient(make([]byte, n), []byte("k"), nil); err == nil {
			t.Errorf("%d-byte recipient key accepted", n)
		}
	}
}

func TestApplianceHPKEKeyIsStable(t *testing.T) {
	key := NewRootKey()
	r1, _ := NewRoot(key)
	r2, _ := NewRoot(key)
	k1, _ := r1.HPKEKey()
	k2, _ := r2.HPKEKey()
	if !bytes.Equal(k1.PublicKey().Bytes(), k2.PublicKey().Bytes()) {
		t.Fatal("same root key, different HPKE keys")
	}
	enc, ct, _, err := SealToRecipient(k1.PublicKey().Bytes(), []byte("stored key"), []byte("info"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := r2.OpenSealedToAppliance(enc, ct, []byte("info")); err != nil || string(pt) != "stored key" {
		t.Fatalf("open: %v", err)
	}
	k3, _ := testRoot(t).HPKEKey()
	if bytes.Equal(k1.PublicKey().Bytes(), k3.PublicKey().Bytes()) {
		t.Fatal("different root keys, same HPKE key")
	}
}

func TestSessionTokens(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := testRoot(t)
	s := r.SessionTokens(func() time.Time { return now })
	tok, exp := s.Mint("alice", 10*time.Minute)
	c, err := s.Verify(tok)
	if err != nil || c.UserID != "alice" || !exp.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("verify: %+v %v", c, err)
	}
	bad := map[string]string{
		"empty":           "",
		"no prefix":       tok[5:],
		"tampered claims": tok[:10] + "x" + tok[11:],
		"tampered mac":    tok[:len(tok)-2] + "AA",
		"other root": func() string {
			t2, _ := testRoot(t).SessionTokens(func() time.Time { return now }).Mint("alice", time.Hour)
			return t2
		}(),
		"no mac": tok[:bytes.LastIndexByte([]byte(tok), '.')],
		"huge":   tok + string(make([]byte, 2000)),
	}
	for name, b := range bad {
		if _, err := s.Verify(b); !errors.Is(err, ErrSessionInvalid) {
			t.Errorf("%s: %v, want ErrSessionInvalid", name, err)
		}
	}
	now = now.Add(11 * time.Minute)
	if _, err := s.Verify(tok); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("expired: %v", err)
	}
}

func BenchmarkSeal(b *testing.B) {
	r := testRoot(b)
	bind := Binding{Kind: "key", Owner: UserOwner("alice"), Method: "PASSKEY", Version: 1}
	key := make([]byte, 32)
	for b.Loop() {
		if _, err := r.Seal(bind, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	r := testRoot(b)
	bind := Binding{Kind: "key", Owner: UserOwner("alice"), Method: "PASSKEY", Version: 1}
	sealed, _ := r.Seal(bind, make([]byte, 32))
	for b.Loop() {
		if _, err := r.Open(bind, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetKey(b *testing.B) {
	ctx := context.Background()
	db := openDB(b, filepath.Join(b.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(b), CustodyOptions{})
	for i := range 1000 {
		_, _ = c.PutKey(ctx, UserOwner(fmt.Sprint(i)), "PASSKEY", make([]byte, 32), PutOptions{})
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := c.GetKey(ctx, UserOwner(fmt.Sprint(i%1000)), "PASSKEY"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPutKeyParallel(b *testing.B) {
	ctx := context.Background()
	db := openDB(b, filepath.Join(b.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(b), CustodyOptions{})
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := c.PutKey(ctx, UserOwner(fmt.Sprint(i%5000)), "PASSKEY", make([]byte, 32), PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPutKeySameClientOnly: a store over a key another client stored is
// refused inside the transaction; the same client, or no restriction,
// replaces it.
func TestPutKeySameClientOnly(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	o := Owner("firebase:p//u1")
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("k1"), PutOptions{ClientID: "client-a", SameClientOnly: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("k2"), PutOptions{ClientID: "client-b", SameClientOnly: true}); !errors.Is(err, ErrClientMismatch) {
		t.Fatalf("another client: %v", err)
	}
	if k, _ := c.GetKey(ctx, o, "FIREBASE"); string(k.Reveal()) != "k1" {
		t.Fatal("a refused store changed the key")
	}
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("k3"), PutOptions{ClientID: "client-a", SameClientOnly: true}); err != nil {
		t.Fatalf("same client: %v", err)
	}
	if _, err := c.PutKey(ctx, o, "FIREBASE", []byte("k4"), PutOptions{ClientID: "client-b"}); err != nil {
		t.Fatalf("without the restriction: %v", err)
	}
}

// TestVerifyBackup: a backup verifies on its TPM, opening every key; a
// damaged record or another TPM fails it.
func TestVerifyBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	db := openDB(t, filepath.Join(dir, "k.db"))
	root, raw, err := Initialize(ctx, sim, db, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	c := NewCustody(db, root, CustodyOptions{})
	for i := range 5 {
		if _, err := c.PutKey(ctx, UserOwner(fmt.Sprint("u", i)), "PASSKEY", []byte("key"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	backup := filepath.Join(dir, "backup.db")
	f, _ := os.Create(backup)
	if _, err := db.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db.Close()
	b, err := store.Open(backup, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyBackup(ctx, sim, b)
	if err != nil || rep.Keys != 5 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	b.Close()

	// A damaged record fails it.
	damaged := filepath.Join(dir, "damaged.db")
	bb, _ := os.ReadFile(backup)
	if err := os.WriteFile(damaged, bb, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := store.Open(damaged, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Update(ctx, func(tx *store.Tx) error {
		return tx.Put(store.BucketKeys, store.Key("user:u9", "PASSKEY"), []byte(`{"f":"bytes","s":"S0FBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"}`))
	})
	d.Close()
	dd, _ := store.Open(damaged, store.Options{ReadOnly: true})
	if _, err := VerifyBackup(ctx, sim, dd); err == nil {
		t.Fatal("a damaged record verified")
	}
	dd.Close()

	// Another TPM cannot unseal it.
	sim.Close()
	other := openSim(t, testSeed+7)
	defer other.Close()
	b, _ = store.Open(backup, store.Options{ReadOnly: true})
	defer b.Close()
	if _, err := VerifyBackup(ctx, other, b); err == nil {
		t.Fatal("verified on another TPM")
	}
}

// TestPriorVersionSplicedBackDoesNotOpen: a prior value copied from
// key_versions into keys does not open (it is sealed as another kind); only
// RestoreVersion brings it back.
func TestPriorVersionSplicedBackDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	c := NewCustody(db, testRoot(t), CustodyOptions{})
	o := UserOwner("alice")
	c.PutKey(ctx, o, "PASSKEY", []byte("old key"), PutOptions{})
	c.PutKey(ctx, o, "PASSKEY", []byte("new key"), PutOptions{})
	err := db.Update(ctx, func(tx *store.Tx) error {
		var prior []byte
		if err := tx.ForEach(store.BucketKeyVersions, store.Prefix(string(o), "PASSKEY"), func(_, v []byte) error {
			prior = append([]byte(nil), v...)
			return nil
		}); err != nil {
			return err
		}
		if prior == nil {
			t.Fatal("no prior version kept")
		}
		return tx.Put(store.BucketKeys, store.Key(string(o), "PASSKEY"), prior)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKey(ctx, o, "PASSKEY"); !errors.Is(err, ErrOpen) {
		t.Fatalf("spliced prior value: %v, want ErrOpen", err)
	}
}
