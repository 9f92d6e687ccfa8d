package enclave

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// TestRecordKeyIsHKDF: the record subkey is HKDF-SHA256(root, salt,
// "keywarden record v1", 32) exactly, for any salt and root key (records
// sealed before keep opening; enclave/testdata's vectors check the
// format end to end).
func TestRecordKeyIsHKDF(t *testing.T) {
	for i := range 500 {
		root := make([]byte, RootKeySize)
		salt := make([]byte, saltSize)
		rand.Read(root)
		rand.Read(salt)
		if i == 0 {
			clear(salt)
		}
		want, err := hkdf.Key(sha256.New, root, salt, recordInfo, 32)
		if err != nil {
			t.Fatal(err)
		}
		r := &Root{key: root}
		var got [32]byte
		r.recordKey(&got, salt)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("root %x salt %x: got %x, want %x", root, salt, got, want)
		}
	}
}

// TestOpenAllocations bounds what opening a record allocates: every
// release opens one, with a subkey of its own (a salt per record).
func TestOpenAllocations(t *testing.T) {
	r := testRoot(t)
	b := Binding{Kind: "key", Owner: UserOwner("uid-1"), Method: "default", Version: 3}
	sealed, err := r.Seal(b, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(200, func() {
		if _, err := r.Open(b, sealed); err != nil {
			t.Fatal(err)
		}
	})
	if n > maxOpenAllocs {
		t.Errorf("Open costs %.0f allocations, want at most %d", n, maxOpenAllocs)
	}
}

const maxOpenAllocs = 4
