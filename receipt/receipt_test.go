package receipt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
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
// Receipt.Encode: the compact encoding (version 2), or version 1 JSON for
// a statement that does not fit it (a line hash that is not 64 hex
// digits).
func TestSignedEncodeMatches(t *testing.T) {
	k := newSigner(t)
	now := time.Now()
	bk, _ := NewBatchKey("n", now, k)
	for _, line := range []string{strings.Repeat("0a", 32), "ab"} {
		var b Builder
		for i := 0; i < 7; i++ {
			h, salt := NewOwnerHash("o")
			b.Add(Statement{Node: "n", Seq: uint64(i + 1), Line: line, Time: now.UTC().Format(time.RFC3339Nano), Action: "release", Outcome: "success", OwnerHash: h, Salt: salt, RequestID: "r\"q\\é\x01"})
		}
		sb := b.Sign(bk, 1, 7, now)
		for i := 0; i < 7; i++ {
			enc := sb.Encode(i)
			fast, err := Parse(enc)
			if err != nil {
				t.Fatal(err)
			}
			want := sb.Receipt(i)
			if len(line) != 64 {
				want.V = Version
			}
			if !reflect.DeepEqual(fast, want) {
				t.Fatalf("%d: %+v\n%+v", i, fast, want)
			}
			if len(line) == 64 && enc != want.Encode() {
				t.Fatalf("%d: Signed.Encode and Receipt.Encode differ", i)
			}
			if err := Verify(fast, &k.PublicKey); err != nil {
				t.Fatal(err)
			}
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

// Receipts issued before the compact encoding (version 1 JSON, in
// testdata/receipts-v1.json, made by the version 1 code and also read by
// the TypeScript client's tests) still verify, and still fail when edited.
func TestVersion1ReceiptsStillVerify(t *testing.T) {
	fx := readFixtures(t, "testdata/receipts-v1.json")
	for i, f := range fx.Receipts {
		r, err := Parse(f.Receipt)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if r.V != Version {
			t.Fatalf("%d: version %d", i, r.V)
		}
		if err := Verify(r, fx.key); err != nil || !r.Statement.IsOwner(f.Owner) {
			t.Fatalf("%d: %v (owner %v)", i, err, r.Statement.IsOwner(f.Owner))
		}
		r.Statement.KeyVersion += "9"
		if Verify(r, fx.key) == nil {
			t.Fatalf("%d: an edited version 1 receipt verified", i)
		}
	}
}

// A compact receipt is about half the size of its JSON, decodes to the
// same receipt (which, re-encoded as version 1 JSON, verifies too), and
// any byte changed in it — as an attacker would edit the header — is
// refused by Parse or Verify.
func TestCompactReceiptEveryByte(t *testing.T) {
	k := newSigner(t)
	rs := sample(t, k, 5)
	for i, r := range rs {
		enc := r.Encode()
		raw, err := b64.DecodeString(enc)
		if err != nil || raw[0] != VersionCompact {
			t.Fatalf("%d: not compact: %v", i, err)
		}
		v1 := b64.EncodeToString(r.JSON())
		if 2*len(enc) > len(v1)+len(v1)/10 {
			t.Fatalf("%d: compact %d bytes, JSON %d", i, len(enc), len(v1))
		}
		for _, s := range []string{enc, v1, string(r.JSON())} {
			p, err := Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(p, &k.PublicKey); err != nil {
				t.Fatalf("%d: %v", i, err)
			}
		}
		for j := range raw {
			for _, x := range []byte{0x01, 0x80} {
				ed := append([]byte(nil), raw...)
				ed[j] ^= x
				p, err := Parse(b64.EncodeToString(ed))
				if err == nil && Verify(p, &k.PublicKey) == nil {
					t.Fatalf("%d: byte %d ^ %#x: the edited receipt verified", i, j, x)
				}
			}
		}
		for _, cut := range []int{1, 10, len(raw) - 1} {
			if _, err := Parse(b64.EncodeToString(raw[:cut])); err == nil {
				t.Fatalf("%d: a receipt cut to %d bytes parsed", i, cut)
			}
		}
		if _, err := Parse(b64.EncodeToString(append(raw, 0))); err == nil {
			t.Fatalf("%d: trailing byte accepted", i)
		}
		// A JSON receipt claiming version 2 is not one.
		j := strings.Replace(string(r.JSON()), `{"v":1`, `{"v":2`, 1)
		if _, err := Parse(j); err == nil {
			t.Fatal("JSON with v 2 parsed")
		}
	}
}

type fixtures struct {
	PEM      string `json:"pem"`
	Receipts []struct {
		Receipt string `json:"receipt"`
		Owner   string `json:"owner"`
	} `json:"receipts"`
	key *ecdsa.PublicKey
}

func readFixtures(t *testing.T, path string) fixtures {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fx fixtures
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(fx.PEM))
	if blk == nil {
		t.Fatal("no PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	fx.key = k.(*ecdsa.PublicKey)
	if len(fx.Receipts) == 0 {
		t.Fatal("no receipts")
	}
	return fx
}

// The compact receipts in testdata/receipts-v2.json (also read by the
// TypeScript client's tests) keep verifying: the encoding is fixed.
func TestCompactFixturesVerify(t *testing.T) {
	fx := readFixtures(t, "testdata/receipts-v2.json")
	for i, f := range fx.Receipts {
		r, err := Parse(f.Receipt)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if r.V != VersionCompact || r.Index != i || r.Encode() != f.Receipt {
			t.Fatalf("%d: version %d, index %d, re-encoded the same: %v", i, r.V, r.Index, r.Encode() == f.Receipt)
		}
		if err := Verify(r, fx.key); err != nil || !r.Statement.IsOwner(f.Owner) {
			t.Fatalf("%d: %v (owner %v)", i, err, r.Statement.IsOwner(f.Owner))
		}
	}
}

// An entry (the binary statement the release path makes) has the leaf and
// the compact encoding of the statement it stands for, and a statement
// taken by Add becomes that entry again; one whose hashes are not in their
// canonical text form is kept as it is and still encodes as before.
func TestEntryIsItsStatement(t *testing.T) {
	for i := range 200 {
		var e Entry
		_, _ = rand.Read(e.Line[:])
		var salt [SaltSize]byte
		_, _ = rand.Read(salt[:])
		e.SetOwner(fmt.Sprintf("firebase:p//u%d", i), salt)
		e.Node, e.Seq, e.Time = []string{"", "node-b"}[i%2], uint64(i)<<(i%60), fmt.Sprintf("2026-12-03T12:00:%02d.%dZ", i%60, i)
		e.Action, e.Outcome, e.Method = "release", []string{"success", "failure"}[i%2], []string{"", "FIREBASE", "PASSKEY"}[i%3]
		e.KeyVersion, e.RequestID = fmt.Sprint(i%5), strings.Repeat("r", i%40)
		s := e.Statement()
		if e.leaf() != s.Leaf() {
			t.Fatalf("%d: entry leaf differs from its statement's", i)
		}
		if !s.IsOwner(fmt.Sprintf("firebase:p//u%d", i)) || s.IsOwner("firebase:p//other") {
			t.Fatalf("%d: owner hash", i)
		}
		if back := entryOf(s); back != e {
			t.Fatalf("%d: entryOf(Statement) = %+v, want %+v", i, back, e)
		}
		path := [][sha256.Size]byte{e.Line, e.OwnerHash}
		a, err1 := appendOwnEntry(nil, &e, i, path)
		b, err2 := appendOwn(nil, &s, i, path)
		if err1 != nil || err2 != nil || string(a) != string(b) {
			t.Fatalf("%d: compact encodings differ (%v, %v)", i, err1, err2)
		}
	}
	for _, s := range []Statement{
		{Line: "AB" + strings.Repeat("0", 62), OwnerHash: b64.EncodeToString(make([]byte, 32)), Salt: b64.EncodeToString(make([]byte, 16))},
		{Line: strings.Repeat("0", 64), OwnerHash: b64.EncodeToString(make([]byte, 31)), Salt: b64.EncodeToString(make([]byte, 16))},
		{Line: strings.Repeat("0", 64), OwnerHash: b64.EncodeToString(make([]byte, 32)), Salt: b64.EncodeToString(make([]byte, 8))},
	} {
		e := entryOf(s)
		if e.stmt == nil || e.Statement() != s || e.leaf() != s.Leaf() {
			t.Fatalf("a statement without a binary form was changed: %+v", s)
		}
	}
}
