package receipt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// refRoot is RFC 6962's definition, split at the largest power of two
// below n.
func refRoot(leaves [][sha256.Size]byte) [sha256.Size]byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return hashNode(refRoot(leaves[:k]), refRoot(leaves[k:]))
}

func TestMerklePathsEverySize(t *testing.T) {
	for n := 1; n <= 70; n++ {
		leaves := make([][sha256.Size]byte, n)
		for i := range leaves {
			leaves[i] = HashLeaf([]byte(fmt.Sprint(i)))
		}
		root := Root(leaves)
		if root != refRoot(leaves) {
			t.Fatalf("n=%d: root differs from RFC 6962's", n)
		}
		for i := 0; i < n; i++ {
			got, err := rootFromPath(leaves[i], i, n, Path(leaves, i))
			if err != nil || got != root {
				t.Fatalf("n=%d i=%d: root %x, %v; want %x", n, i, got, err, root)
			}
			if n > 1 {
				if got, _ := rootFromPath(leaves[i], (i+1)%n, n, Path(leaves, i)); got == root {
					t.Fatalf("n=%d i=%d: path verifies at another index", n, i)
				}
			}
		}
	}
}

func newSigner(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sample(t testing.TB, tpmKey *ecdsa.PrivateKey, n int) []*Receipt {
	issued := time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC) // before the statements
	bk, err := NewBatchKey("node-a", issued, tpmKey)
	if err != nil {
		t.Fatal(err)
	}
	var b Builder
	for i := 0; i < n; i++ {
		h, salt := NewOwnerHash(fmt.Sprintf("firebase:p//user%d", i))
		b.Add(Statement{Node: "node-a", Seq: uint64(10 + i), Line: strings.Repeat("ab", 32), Time: "2026-12-03T12:00:00Z",
			Action: "release", Outcome: "success", OwnerHash: h, Salt: salt, Method: "FIREBASE", KeyVersion: "3", RequestID: fmt.Sprint("req-", i)})
	}
	sb := b.Sign(bk, 10, uint64(10+n), issued.Add(time.Hour+time.Second))
	out := make([]*Receipt, n)
	for i := range out {
		out[i] = sb.Receipt(i)
	}
	return out
}

func TestReceiptVerifiesAndRoundTrips(t *testing.T) {
	k := newSigner(t)
	for _, r := range sample(t, k, 5) {
		p, err := Parse(r.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(p, &k.PublicKey); err != nil {
			t.Fatalf("receipt %d: %v", r.Index, err)
		}
		if !p.Statement.IsOwner(fmt.Sprintf("firebase:p//user%d", r.Index)) || p.Statement.IsOwner("firebase:p//someone") {
			t.Fatal("owner hash")
		}
	}
}

// Every field of a receipt, edited, makes it fail: each is covered by a
// signature or the Merkle path.
func TestEditedReceiptRefused(t *testing.T) {
	k := newSigner(t)
	r := sample(t, k, 3)[1]
	var m map[string]any
	raw, _ := json.Marshal(r)
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var edits int
	var walk func(path string, v any, set func(any))
	walk = func(path string, v any, set func(any)) {
		switch x := v.(type) {
		case map[string]any:
			for key, val := range x {
				walk(path+"."+key, val, func(nv any) { x[key] = nv })
			}
		case []any:
			for i, val := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), val, func(nv any) { x[i] = nv })
			}
		case string:
			edited := "A" + x
			if len(x) > 0 && x[0] == 'A' {
				edited = "B" + x[1:]
			}
			set(edited)
			check(t, k, m, path)
			set(x)
			edits++
		case float64:
			set(x + 1)
			check(t, k, m, path)
			set(x)
			edits++
		}
	}
	walk("", m, nil)
	if edits < 15 {
		t.Fatalf("only %d fields edited", edits)
	}
}

func check(t *testing.T, k *ecdsa.PrivateKey, m map[string]any, path string) {
	t.Helper()
	b, _ := json.Marshal(m)
	r, err := Parse(string(b))
	if err != nil {
		return // refused already
	}
	if err := Verify(r, &k.PublicKey); err == nil {
		t.Errorf("edited %s: still verifies", path)
	}
}

func TestReceiptOfAnotherApplianceRefused(t *testing.T) {
	mine, theirs := newSigner(t), newSigner(t)
	r := sample(t, theirs, 2)[0]
	if err := Verify(r, &mine.PublicKey); err == nil {
		t.Fatal("receipt certified by another appliance key verified")
	}
	// A certificate re-signed by an attacker's key, naming ours as signer.
	r.Cert.Signer = KeyID(&mine.PublicKey)
	if err := Verify(r, &mine.PublicKey); err == nil {
		t.Fatal("forged certificate verified")
	}
	if !reflect.DeepEqual(Verify(nil), Verify(&Receipt{})) && Verify(nil) == nil {
		t.Fatal("nil receipt")
	}
}

func TestMatchLine(t *testing.T) {
	k := newSigner(t)
	bk, _ := NewBatchKey("", time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC), k)
	line := []byte(`{"seq":7,"time":"2026-12-03T12:00:00Z","prev":"00","type":"event","action":"release","outcome":"success","owner":"firebase:p//u","method":"FIREBASE","request_id":"r1","fields":{"key_version":"2"}}`)
	sum := sha256.Sum256(line)
	h, salt := NewOwnerHash("firebase:p//u")
	var b Builder
	b.Add(Statement{Seq: 7, Line: fmt.Sprintf("%x", sum), Time: "2026-12-03T12:00:00Z", Action: "release", Outcome: "success",
		OwnerHash: h, Salt: salt, Method: "FIREBASE", KeyVersion: "2", RequestID: "r1"})
	r := b.Sign(bk, 7, 7, time.Now()).Receipt(0)
	if err := Verify(r, &k.PublicKey); err != nil {
		t.Fatal(err)
	}
	if err := MatchLine(r, line); err != nil {
		t.Fatal(err)
	}
	other := []byte(strings.Replace(string(line), `"r1"`, `"r2"`, 1))
	if MatchLine(r, other) == nil {
		t.Fatal("another line matched")
	}
}

// Signed.Encode (the server's fast path) parses to the same receipt as
// Receipt.Encode.
func TestSignedEncodeMatches(t *testing.T) {
	k := newSigner(t)
	now := time.Now()
	bk, _ := NewBatchKey("n", now, k)
	var b Builder
	for i := 0; i < 7; i++ {
		h, salt := NewOwnerHash("o")
		b.Add(Statement{Node: "n", Seq: uint64(i + 1), Line: "ab", Time: now.UTC().Format(time.RFC3339Nano), Action: "release", Outcome: "success", OwnerHash: h, Salt: salt, RequestID: "r\"q\\é\x01"})
	}
	sb := b.Sign(bk, 1, 7, now)
	for i := 0; i < 7; i++ {
		fast, err := Parse(sb.Encode(i))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, sb.Receipt(i)) {
			t.Fatalf("%d: %+v\n%+v", i, fast, sb.Receipt(i))
		}
		if err := Verify(fast, &k.PublicKey); err != nil {
			t.Fatal(err)
		}
	}
}

// A batch key is issued when the process starts; someone who copies it
// out of that process's memory must not be able to sign receipts for
// releases that supposedly happened earlier. Both the statement's time and
// the batch's time are held to the certificate's Issued.
func TestBackdatedReceiptRefused(t *testing.T) {
	sk := newSigner(t)
	issued := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	bk, err := NewBatchKey("n1", issued, sk)
	if err != nil {
		t.Fatal(err)
	}
	make1 := func(stmtTime string, batchTime time.Time) *Receipt {
		t.Helper()
		h, salt := NewOwnerHash("firebase:p//alice")
		var b Builder
		b.Add(Statement{Node: "n1", Seq: 7, Line: "00", Time: stmtTime, Action: "release", Outcome: "success", OwnerHash: h, Salt: salt})
		r, err := Parse(b.Sign(bk, 7, 7, batchTime).Encode(0))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// At and after the issue time: valid.
	if err := Verify(make1("2026-12-03T12:00:00Z", issued), &sk.PublicKey); err != nil {
		t.Fatalf("a receipt dated at the batch key's issue time: %v", err)
	}
	if err := Verify(make1("2026-12-03T12:00:01.5Z", issued.Add(2*time.Second)), &sk.PublicKey); err != nil {
		t.Fatalf("a receipt dated after the issue time: %v", err)
	}
	// The attacker's receipts: the whole thing backdated, the statement
	// backdated in a current batch, the batch backdated.
	for name, r := range map[string]*Receipt{
		"statement and batch in 2020": make1("2020-01-01T00:00:00Z", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)),
		"statement 1ns early":         make1("2026-12-03T11:59:59.999999999Z", issued),
		"batch 1s early":              make1("2026-12-03T12:00:00Z", issued.Add(-time.Second)),
	} {
		err := Verify(r, &sk.PublicKey)
		if !errors.Is(err, ErrBackdated) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Verify = %v, want ErrBackdated", name, err)
		}
	}
	// A statement time that is not a time at all is refused too.
	if err := Verify(make1("yesterday", issued), &sk.PublicKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("statement time %q: Verify = %v, want ErrInvalid", "yesterday", err)
	}
}
