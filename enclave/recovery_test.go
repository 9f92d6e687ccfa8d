package enclave

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/keywarden/keywarden/internal/secret"
)

// TestGFMulVectors checks GF(2^8) arithmetic against the worked examples
// of FIPS-197 §4.2 and the inverse pair used in its S-box derivation.
func TestGFMulVectors(t *testing.T) {
	for _, tc := range []struct{ a, b, want byte }{
		{0x57, 0x83, 0xc1}, // FIPS-197 §4.2
		{0x57, 0x13, 0xfe}, // FIPS-197 §4.2.1
		{0x57, 0x02, 0xae},
		{0x57, 0x04, 0x47},
		{0x57, 0x08, 0x8e},
		{0x57, 0x10, 0x07},
		{0x53, 0xca, 0x01}, // {53}·{ca} = {01}
		{0x00, 0xff, 0x00},
		{0x01, 0xab, 0xab},
	} {
		if got := gfMul(tc.a, tc.b); got != tc.want {
			t.Errorf("gfMul(%#02x, %#02x) = %#02x, want %#02x", tc.a, tc.b, got, tc.want)
		}
		if got := gfMul(tc.b, tc.a); got != tc.want {
			t.Errorf("gfMul(%#02x, %#02x) = %#02x, want %#02x (commuted)", tc.b, tc.a, got, tc.want)
		}
	}
	if gfInv(0x53) != 0xca || gfInv(0xca) != 0x53 {
		t.Errorf("gfInv(0x53) = %#02x, gfInv(0xca) = %#02x", gfInv(0x53), gfInv(0xca))
	}
	if gfInv(0) != 0 {
		t.Errorf("gfInv(0) = %#02x", gfInv(0))
	}
}

// TestGFMulAgainstTables compares the constant-time multiplication with an
// independent table implementation (logarithms to the generator 0x03),
// over every pair, and checks every inverse.
func TestGFMulAgainstTables(t *testing.T) {
	var exp [255]byte
	var log [256]int
	x := byte(1)
	for i := range 255 {
		exp[i] = x
		log[x] = i
		// x *= 3, i.e. x·2 ⊕ x with the AES reduction.
		x2 := x << 1
		if x&0x80 != 0 {
			x2 ^= 0x1b
		}
		x ^= x2
	}
	if x != 1 {
		t.Fatal("0x03 is not a generator: table construction is wrong")
	}
	for a := range 256 {
		for b := range 256 {
			want := byte(0)
			if a != 0 && b != 0 {
				want = exp[(log[a]+log[b])%255]
			}
			if got := gfMul(byte(a), byte(b)); got != want {
				t.Fatalf("gfMul(%#02x, %#02x) = %#02x, tables say %#02x", a, b, got, want)
			}
		}
		if a != 0 && gfMul(byte(a), gfInv(byte(a))) != 1 {
			t.Fatalf("a·a⁻¹ ≠ 1 for a = %#02x", a)
		}
	}
}

// fixedReader returns its bytes, then fails: a split driven by it uses
// exactly the coefficients a vector names.
type fixedReader struct{ b []byte }

func (r *fixedReader) Read(p []byte) (int, error) {
	if len(r.b) < len(p) {
		return 0, errors.New("fixedReader: exhausted")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestShamirVectors: polynomials worked out by hand.
//
//	t=2: f(x) = 0x42 + 0x07·x        → f(1)=0x45, f(2)=0x4c, f(3)=0x4b
//	t=3: f(x) = 0x01 + 0x02·x + 0x03·x² → f(1)=0x00, f(2)=0x09, f(3)=0x08
//	two bytes, t=2: (0x42 + 0x07·x, 0x01 + 0xff·x) → f(1)=(0x45,0xfe), f(2)=(0x4c,0xe4)
func TestShamirVectors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret []byte
		t, n   int
		coef   []byte // what the random reader yields: t-1 bytes per secret byte
		shares [][]byte
	}{
		{"t2", []byte{0x42}, 2, 3, []byte{0x07}, [][]byte{{0x45}, {0x4c}, {0x4b}}},
		{"t3", []byte{0x01}, 3, 3, []byte{0x02, 0x03}, [][]byte{{0x00}, {0x09}, {0x08}}},
		{"two-bytes", []byte{0x42, 0x01}, 2, 2, []byte{0x07, 0xff}, [][]byte{{0x45, 0xfe}, {0x4c, 0xe4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ys, err := shamirSplit(tc.secret, tc.t, tc.n, &fixedReader{b: tc.coef})
			if err != nil {
				t.Fatal(err)
			}
			for i := range ys {
				if !bytes.Equal(ys[i], tc.shares[i]) {
					t.Errorf("share %d = %x, want %x", i+1, ys[i], tc.shares[i])
				}
			}
			xs := make([]byte, tc.n)
			for i := range xs {
				xs[i] = byte(i + 1)
			}
			got, err := shamirCombine(xs[:tc.t], tc.shares[:tc.t])
			if err != nil || !bytes.Equal(got, tc.secret) {
				t.Errorf("combine = %x, %v; want %x", got, err, tc.secret)
			}
		})
	}
}

// subsets calls fn with every k-subset of 0..n-1.
func subsets(n, k int, fn func([]int)) {
	idx := make([]int, k)
	var rec func(start, depth int)
	rec = func(start, depth int) {
		if depth == k {
			fn(idx)
			return
		}
		for i := start; i < n; i++ {
			idx[depth] = i
			rec(i+1, depth+1)
		}
	}
	rec(0, 0)
}

// TestShamirAnyTOfN: every T-subset rebuilds the secret, no (T-1)-subset
// does.
func TestShamirAnyTOfN(t *testing.T) {
	for _, tc := range []struct{ t, n int }{{1, 1}, {2, 2}, {2, 3}, {3, 5}, {4, 7}, {5, 5}} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.t, tc.n), func(t *testing.T) {
			s := make([]byte, 32)
			rand.Read(s)
			ys, err := shamirSplit(s, tc.t, tc.n, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			pick := func(idx []int) ([]byte, [][]byte) {
				xs, sel := make([]byte, len(idx)), make([][]byte, len(idx))
				for j, i := range idx {
					xs[j], sel[j] = byte(i+1), ys[i]
				}
				return xs, sel
			}
			subsets(tc.n, tc.t, func(idx []int) {
				got, err := shamirCombine(pick(idx))
				if err != nil || !bytes.Equal(got, s) {
					t.Errorf("shares %v: combine failed (%v)", idx, err)
				}
			})
			if tc.t > 1 {
				subsets(tc.n, tc.t-1, func(idx []int) {
					got, err := shamirCombine(pick(idx))
					if err == nil && bytes.Equal(got, s) {
						t.Errorf("shares %v: %d shares rebuilt the secret with threshold %d", idx, len(idx), tc.t)
					}
				})
			}
		})
	}
	t.Run("255", func(t *testing.T) {
		s := make([]byte, 32)
		rand.Read(s)
		ys, err := shamirSplit(s, 3, 255, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		got, err := shamirCombine([]byte{255, 7, 128}, [][]byte{ys[254], ys[6], ys[127]})
		if err != nil || !bytes.Equal(got, s) {
			t.Errorf("combine 255/7/128 failed: %v", err)
		}
	})
}

// operator is one operator's age key pair.
type operator struct {
	id        *age.X25519Identity
	recipient string
}

func newOperators(t testing.TB, n int) []operator {
	t.Helper()
	out := make([]operator, n)
	for i := range out {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = operator{id: id, recipient: id.Recipient().String()}
	}
	return out
}

func recipientsOf(ops []operator) []string {
	var r []string
	for _, o := range ops {
		r = append(r, o.recipient)
	}
	return r
}

func decryptAll(t testing.TB, shares []RecoveryShare, ops []operator) [][]byte {
	t.Helper()
	var out [][]byte
	for i, s := range shares {
		p, err := DecryptShare(s.File(), ops[i].id)
		if err != nil {
			t.Fatalf("share %d: %v", s.Index, err)
		}
		out = append(out, p.Reveal())
	}
	return out
}

func TestRecoveryOptionsValidate(t *testing.T) {
	ops := newOperators(t, 3)
	pq, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	r := recipientsOf(ops)
	for _, tc := range []struct {
		name string
		opts RecoveryOptions
		ok   bool
	}{
		{"none", RecoveryOptions{}, false},
		{"2 of 3", RecoveryOptions{Recipients: r, Threshold: 2}, true},
		{"default majority", RecoveryOptions{Recipients: r}, true},
		{"3 of 3", RecoveryOptions{Recipients: r, Threshold: 3}, true},
		{"1 of 3", RecoveryOptions{Recipients: r, Threshold: 1}, false},
		{"4 of 3", RecoveryOptions{Recipients: r, Threshold: 4}, false},
		{"single without consent", RecoveryOptions{Recipients: r[:1]}, false},
		{"single with consent", RecoveryOptions{Recipients: r[:1], AllowSingleShare: true}, true},
		{"single, threshold 2", RecoveryOptions{Recipients: r[:1], Threshold: 2, AllowSingleShare: true}, false},
		{"duplicate", RecoveryOptions{Recipients: []string{r[0], r[1], r[0]}, Threshold: 2}, false},
		{"hybrid recipient", RecoveryOptions{Recipients: []string{r[0], pq.Recipient().String()}, Threshold: 2}, true},
		{"secret key given as recipient", RecoveryOptions{Recipients: []string{r[0], ops[1].id.String()}, Threshold: 2}, false},
		{"garbage", RecoveryOptions{Recipients: []string{r[0], "age1notakey"}, Threshold: 2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "AGE-SECRET-KEY") {
				t.Fatalf("error reveals a secret key: %v", err)
			}
		})
	}
}

func TestSplitCombine(t *testing.T) {
	ops := newOperators(t, 3)
	raw := NewRootKey()
	shares, err := SplitRoot(raw, RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(shares) != 3 {
		t.Fatalf("%d shares", len(shares))
	}
	wantID, _ := RootID(raw)
	for i, s := range shares {
		if s.Index != i+1 || s.Threshold != 2 || s.Total != 3 || s.RootID != wantID || s.SplitID != shares[0].SplitID || s.Recipient != ops[i].recipient {
			t.Fatalf("share %d bookkeeping: %+v", i, s)
		}
		if bytes.Contains(s.File(), raw.Reveal()) {
			t.Fatal("share file contains the root key")
		}
	}
	plain := decryptAll(t, shares, ops)
	subsets(3, 2, func(idx []int) {
		k, err := CombineShares([][]byte{plain[idx[0]], plain[idx[1]]})
		if err != nil || !k.Equal(raw) {
			t.Errorf("shares %v: %v", idx, err)
		}
	})
	if k, err := CombineShares(plain); err != nil || !k.Equal(raw) {
		t.Errorf("all three: %v", err)
	}

	// The negative cases.
	t.Run("one share", func(t *testing.T) {
		if _, err := CombineShares(plain[:1]); !errors.Is(err, ErrTooFewShares) {
			t.Fatalf("err = %v, want ErrTooFewShares", err)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		if _, err := CombineShares([][]byte{plain[0], plain[0]}); !errors.Is(err, ErrDuplicateShare) {
			t.Fatalf("err = %v, want ErrDuplicateShare", err)
		}
	})
	t.Run("another init", func(t *testing.T) {
		other, err := SplitRoot(NewRootKey(), RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
		if err != nil {
			t.Fatal(err)
		}
		op := decryptAll(t, other, ops)
		if _, err := CombineShares([][]byte{plain[0], op[1]}); !errors.Is(err, ErrSharesMismatch) {
			t.Fatalf("err = %v, want ErrSharesMismatch", err)
		}
	})
	t.Run("another split of the same key", func(t *testing.T) {
		again, err := SplitRoot(raw, RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
		if err != nil {
			t.Fatal(err)
		}
		ap := decryptAll(t, again, ops)
		if _, err := CombineShares([][]byte{plain[0], ap[1]}); !errors.Is(err, ErrSharesMismatch) {
			t.Fatalf("err = %v, want ErrSharesMismatch", err)
		}
		if k, err := CombineShares(ap[1:]); err != nil || !k.Equal(raw) {
			t.Fatalf("a reshare's own shares: %v", err)
		}
	})
	t.Run("wrong identity", func(t *testing.T) {
		if _, err := DecryptShare(shares[0].File(), ops[1].id, ops[2].id); !errors.Is(err, ErrShareIdentity) {
			t.Fatalf("err = %v, want ErrShareIdentity", err)
		}
	})
	t.Run("altered share value", func(t *testing.T) {
		var p sharePlain
		if err := json.Unmarshal(plain[1], &p); err != nil {
			t.Fatal(err)
		}
		p.Y[3] ^= 1
		forged, _ := json.Marshal(p)
		if _, err := CombineShares([][]byte{plain[0], forged}); !errors.Is(err, ErrWrongRootKey) {
			t.Fatalf("err = %v, want ErrWrongRootKey", err)
		}
	})
	t.Run("altered ciphertext", func(t *testing.T) {
		f := shares[0].File()
		i := bytes.Index(f, []byte("-----BEGIN"))
		f[i+len("-----BEGIN AGE ENCRYPTED FILE-----\n")+10] ^= 0x01
		if _, err := DecryptShare(f, ops[0].id); err == nil {
			t.Fatal("an altered share file decrypted")
		}
	})
	t.Run("bare armored file", func(t *testing.T) {
		p, err := DecryptShare(shares[2].Armored, ops[2].id)
		if err != nil {
			t.Fatal(err)
		}
		info, err := InspectShare(p)
		if err != nil || info.Index != 3 || info.Threshold != 2 || info.RootID != wantID {
			t.Fatalf("InspectShare = %+v, %v", info, err)
		}
	})
}

func TestSingleShare(t *testing.T) {
	ops := newOperators(t, 1)
	raw := NewRootKey()
	if _, err := SplitRoot(raw, RecoveryOptions{Recipients: recipientsOf(ops)}); err == nil {
		t.Fatal("a single share was made without AllowSingleShare")
	}
	shares, err := SplitRoot(raw, RecoveryOptions{Recipients: recipientsOf(ops), AllowSingleShare: true})
	if err != nil {
		t.Fatal(err)
	}
	k, err := CombineShares(decryptAll(t, shares, ops))
	if err != nil || !k.Equal(raw) {
		t.Fatalf("single share: %v", err)
	}
}

// TestDisasterRecovery is the whole path on simulators: init with 3 shares
// (threshold 2) → keys stored → backup → the TPM is lost (a simulator with
// another seed stands for the new host's TPM; the old sealed blob must not
// unseal there) → 2 shares rebuild the root key → resealed to the new TPM
// → every key releases.
func TestDisasterRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ops := newOperators(t, 3)

	// The old host.
	sim := openSim(t, testSeed)
	db := openDB(t, filepath.Join(dir, "old.db"))
	root, raw, err := Initialize(ctx, sim, db, InitOptions{PCRs: []int{16}})
	if err != nil {
		t.Fatal(err)
	}
	shares, err := SetupRecovery(ctx, db, raw, RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	raw.Wipe()
	if err != nil {
		t.Fatal(err)
	}
	rb, err := InitRollback(ctx, sim, db, root, RollbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCustody(db, root, CustodyOptions{})
	want := map[Owner][]byte{}
	for i := range 5 {
		o := UserOwner(fmt.Sprintf("user-%d", i))
		k := make([]byte, 32)
		rand.Read(k)
		if _, err := c.PutKey(ctx, o, "PASSKEY", k, PutOptions{}); err != nil {
			t.Fatal(err)
		}
		want[o] = k
	}
	if _, err := c.DeleteOwner(ctx, UserOwner("user-4")); err != nil {
		t.Fatal(err)
	}
	delete(want, UserOwner("user-4"))
	rb.BeforeBackup()
	backup := filepath.Join(dir, "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	oldSealed, err := LoadSealedRoot(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	oldID := root.RootID()
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	root.Close()
	db.Close()
	sim.Close() // the TPM is gone

	// The new host.
	sim = openSim(t, testSeed+1000)
	defer sim.Close()
	if k, err := UnsealRoot(ctx, sim, oldSealed); err == nil {
		k.Wipe()
		t.Fatal("the old sealed root key unsealed on another TPM")
	}
	// The old host's store does not unseal here either.
	bdb := openDB(t, backup)
	if _, err := Unseal(ctx, sim, bdb); err == nil {
		t.Fatal("the backup's root key unsealed on another TPM")
	}

	plain := decryptAll(t, shares, ops)
	if _, err := CombineShares(plain[:1]); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("one share: err = %v, want ErrTooFewShares", err)
	}
	// A complete set of shares of another appliance combines to its own
	// key, which the backup refuses.
	otherShares, err := SplitRoot(NewRootKey(), RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := CombineShares(decryptAll(t, otherShares, ops)[:2])
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRecoveredRoot(ctx, bdb, otherKey); !errors.Is(err, ErrWrongRootKey) {
		t.Fatalf("another appliance's key: err = %v, want ErrWrongRootKey", err)
	}

	key, err := CombineShares([][]byte{plain[2], plain[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer key.Wipe()
	if err := VerifyRecoveredRoot(ctx, bdb, key); err != nil {
		t.Fatal(err)
	}
	if err := ResealKey(ctx, sim, bdb, key, []int{16}); err != nil {
		t.Fatal(err)
	}
	assertNoTransientHandles(t, sim)
	root2, err := Unseal(ctx, sim, bdb)
	if err != nil {
		t.Fatal(err)
	}
	defer root2.Close()
	if root2.RootID() != oldID {
		t.Fatal("the recovered root key has another id")
	}
	rb2, err := OpenRollback(ctx, sim, bdb, root2, RollbackOptions{})
	if err != nil {
		t.Fatalf("first start on the new TPM: %v", err)
	}
	if st := rb2.Status(); st.Event != RollbackNewCounter || !st.Available {
		t.Fatalf("rollback status on the new TPM: %+v", st)
	}
	rb2.Close()
	c2 := NewCustody(bdb, root2, CustodyOptions{})
	for o, k := range want {
		got, err := c2.GetKey(ctx, o, "PASSKEY")
		if err != nil || !bytes.Equal(got.Reveal(), k) {
			t.Fatalf("%s: key does not release after recovery: %v", o, err)
		}
	}
	if _, err := c2.GetKey(ctx, UserOwner("user-4"), "PASSKEY"); err == nil {
		t.Fatal("a deleted key came back")
	}
	bdb.Close()
}

// TestReseal: reseal to other PCRs; the new blob follows the new policy.
func TestReseal(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	root, raw, err := Initialize(ctx, sim, db, InitOptions{PCRs: []int{16}})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	id := root.RootID()
	root.Close()
	// Reseal to PCR 23 instead of 16; then extending 16 no longer matters
	// and extending 23 does.
	if err := Reseal(ctx, sim, db, []int{23}); err != nil {
		t.Fatal(err)
	}
	s, _ := LoadSealedRoot(ctx, db)
	if len(s.PCRs) != 1 || s.PCRs[0] != 23 {
		t.Fatalf("sealed PCRs = %v", s.PCRs)
	}
	extendPCR(t, sim, 16)
	r, err := Unseal(ctx, sim, db)
	if err != nil {
		t.Fatalf("after extending an unsealed PCR: %v", err)
	}
	if r.RootID() != id {
		t.Fatal("reseal changed the root key")
	}
	r.Close()
	extendPCR(t, sim, 23)
	if _, err := Unseal(ctx, sim, db); !errors.Is(err, ErrPolicyMismatch) {
		t.Fatalf("after extending the sealed PCR: err = %v, want ErrPolicyMismatch", err)
	}
	// Reseal refuses when the TPM cannot unseal (nothing changes).
	if err := Reseal(ctx, sim, db, nil); !errors.Is(err, ErrPolicyMismatch) {
		t.Fatalf("reseal from a sealed state: err = %v", err)
	}
	assertNoTransientHandles(t, sim)
}

// TestRecoveryRecord: the shares are kept in the store, and a reshare
// replaces them with a new split of the same key.
func TestRecoveryRecord(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "k.db"))
	defer db.Close()
	if _, err := LoadRecovery(ctx, db); !errors.Is(err, ErrNoRecoveryRecord) {
		t.Fatalf("err = %v, want ErrNoRecoveryRecord", err)
	}
	ops := newOperators(t, 4)
	raw := NewRootKey()
	shares, err := SetupRecovery(ctx, db, raw, RecoveryOptions{Recipients: recipientsOf(ops[:3]), Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	info, err := LoadRecovery(ctx, db)
	if err != nil || info.SplitID != shares[0].SplitID || len(info.Shares) != 3 || info.Threshold != 2 {
		t.Fatalf("LoadRecovery = %+v, %v", info, err)
	}
	root, err := NewRoot(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	re, err := Reshare(ctx, db, root, RecoveryOptions{Recipients: recipientsOf(ops[1:]), Threshold: 3})
	if err != nil {
		t.Fatal(err)
	}
	info, _ = LoadRecovery(ctx, db)
	if info.SplitID != re[0].SplitID || info.Threshold != 3 || info.RootID != shares[0].RootID {
		t.Fatalf("after reshare: %+v", info)
	}
	k, err := CombineShares(decryptAll(t, info.Shares, ops[1:]))
	if err != nil || !k.Equal(raw) {
		t.Fatalf("reshared shares from the store: %v", err)
	}
}

// FuzzCombineShares: arbitrary share plaintexts never panic, and whatever
// combines is a root key whose id the shares named.
func FuzzCombineShares(f *testing.F) {
	ops := newOperators(f, 3)
	shares, err := SplitRoot(NewRootKey(), RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	if err != nil {
		f.Fatal(err)
	}
	plain := decryptAll(f, shares, ops)
	f.Add(bytes.Join(plain[:2], []byte("\n\n")))
	f.Add(bytes.Join(plain, []byte("\n\n")))
	f.Add(plain[0])
	f.Add([]byte(`{"v":1,"root_id":"00000000000000000000000000000000","split_id":"00000000000000000000000000000000","t":1,"n":1,"x":1,"y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`))
	f.Add([]byte(`{"v":1,"t":0,"n":0,"x":0,"y":""}` + "\n\n" + `{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		parts := bytes.Split(data, []byte("\n\n"))
		k, err := CombineShares(parts)
		if err != nil {
			return
		}
		if k.Len() != RootKeySize {
			t.Fatalf("combined key of %d bytes", k.Len())
		}
		info, err := InspectShare(secret.CopyBytes(parts[0]))
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := RootID(k); id != info.RootID {
			t.Fatal("combined a key whose id the shares do not name")
		}
	})
}

// FuzzDecryptShare: a share file is untrusted input.
func FuzzDecryptShare(f *testing.F) {
	ops := newOperators(f, 2)
	shares, err := SplitRoot(NewRootKey(), RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shares[0].File())
	f.Add(shares[1].Armored)
	f.Add([]byte("# comment only\n"))
	f.Add([]byte("age-encryption.org/v1\n-> X25519 AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecryptShare(data, ops[0].id)
		if err == nil {
			_, _ = InspectShare(p)
		}
	})
}

// Example_recovery splits a root key 2-of-3 to three operators and
// rebuilds it from two of them.
func Example_recovery() {
	var ids []*age.X25519Identity
	var recipients []string
	for range 3 {
		id, _ := age.GenerateX25519Identity()
		ids = append(ids, id)
		recipients = append(recipients, id.Recipient().String())
	}
	raw := NewRootKey()
	shares, err := SplitRoot(raw, RecoveryOptions{Recipients: recipients, Threshold: 2})
	if err != nil {
		panic(err)
	}
	// Operators 1 and 3 each open their own share file.
	p1, _ := DecryptShare(shares[0].File(), ids[0])
	p3, _ := DecryptShare(shares[2].File(), ids[2])
	key, err := CombineShares([][]byte{p1.Reveal(), p3.Reveal()})
	fmt.Println(len(shares), "shares; rebuilt:", err == nil && key.Equal(raw))
	// Output: 3 shares; rebuilt: true
}

func BenchmarkSplitRoot3(b *testing.B) {
	ops := newOperators(b, 3)
	raw := NewRootKey()
	opts := RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2}
	for b.Loop() {
		if _, err := SplitRoot(raw, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCombineShares2(b *testing.B) {
	ops := newOperators(b, 3)
	shares, err := SplitRoot(NewRootKey(), RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	if err != nil {
		b.Fatal(err)
	}
	plain := decryptAll(b, shares, ops)[:2]
	for b.Loop() {
		if _, err := CombineShares(plain); err != nil {
			b.Fatal(err)
		}
	}
}
