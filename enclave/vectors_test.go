package enclave

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

// Frozen vectors of the formats that outlive a process: sealed records,
// root subkeys, the appliance's HPKE key, the root id and session tokens.
// A change that makes an existing vector fail changes a stored or wire
// format: every appliance's data or every minted token would stop opening.
// Such a change must be deliberate (a new schema or prefix, a migration),
// and only then are the vectors written again, with
//
//	go test ./enclave -run TestFrozenVectors -update-vectors
//
// which adds vectors for the new format; old vectors are kept and must
// still open where the code promises to read the old format.
var updateVectors = flag.Bool("update-vectors", false, "rewrite enclave/testdata/vectors.json (a deliberate format change)")

type recordVector struct {
	Kind      string `json:"kind"`
	Owner     string `json:"owner"`
	Method    string `json:"method"`
	Version   uint64 `json:"version"`
	Plaintext string `json:"plaintext"` // hex
	Sealed    string `json:"sealed"`    // hex
}

type tokenVector struct {
	Now    int64  `json:"now"` // unix seconds at which it is checked
	Token  string `json:"token"`
	UserID string `json:"userId"`
	Exp    int64  `json:"exp"`
}

type vectors struct {
	Comment       string            `json:"comment"`
	RootKey       string            `json:"rootKey"` // hex; a test key, never used elsewhere
	Subkeys       map[string]string `json:"subkeys"` // label → hex
	RootID        string            `json:"rootId"`
	HPKEPublicKey string            `json:"hpkePublicKey"` // hex
	Records       []recordVector    `json:"records"`
	SessionTokens []tokenVector     `json:"sessionTokens"`
}

const vectorsFile = "testdata/vectors.json"

func vectorRoot(t *testing.T, keyHex string) *Root {
	t.Helper()
	k, err := hex.DecodeString(keyHex)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRoot(secret.NewBytes(k))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestFrozenVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (write them with -update-vectors)", err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	root := vectorRoot(t, v.RootKey)

	t.Run("subkeys", func(t *testing.T) {
		// Every label the code derives with is frozen here.
		for _, label := range subkeyLabels {
			if _, ok := v.Subkeys[label]; !ok {
				t.Errorf("subkey label %q has no frozen vector (add it to testdata/vectors.json)", label)
			}
		}
		for label, want := range v.Subkeys {
			k := root.Subkey(label)
			if got := hex.EncodeToString(k.Reveal()); got != want {
				t.Errorf("subkey %q = %s, frozen %s: the derivation changed (every HMAC, MAC and token under it breaks)", label, got, want)
			}
		}
		if got := root.RootID(); got != v.RootID {
			t.Errorf("RootID = %s, frozen %s: recovery shares and backups would not match their root", got, v.RootID)
		}
	})
	t.Run("hpke key", func(t *testing.T) {
		k, err := root.HPKEKey()
		if err != nil {
			t.Fatal(err)
		}
		pub := k.PublicKey().Bytes()
		if got := hex.EncodeToString(pub); got != v.HPKEPublicKey {
			t.Errorf("appliance HPKE public key changed: clients and attestations pinned to it would break")
		}
	})
	t.Run("records", func(t *testing.T) {
		if len(v.Records) == 0 {
			t.Fatal("no record vectors")
		}
		for _, rv := range v.Records {
			sealed, _ := hex.DecodeString(rv.Sealed)
			want, _ := hex.DecodeString(rv.Plaintext)
			b := Binding{Kind: rv.Kind, Owner: Owner(rv.Owner), Method: rv.Method}
			got, err := root.Open(b, sealed)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("frozen %s record of %s/%s v%d does not open (%v): stored records would be lost", rv.Kind, rv.Owner, rv.Method, rv.Version, err)
				continue
			}
			if ver, err := RecordVersion(sealed); err != nil || ver != rv.Version {
				t.Errorf("frozen record: version %d (%v), want %d", ver, err, rv.Version)
			}
			// The binding is part of the format: the same bytes under
			// another owner, method or kind must not open.
			for _, other := range []Binding{
				{Kind: rv.Kind, Owner: Owner(rv.Owner + "x"), Method: rv.Method},
				{Kind: rv.Kind, Owner: Owner(rv.Owner), Method: rv.Method + "x"},
				{Kind: rv.Kind + "x", Owner: Owner(rv.Owner), Method: rv.Method},
				{Kind: rv.Kind, Owner: Owner(rv.Owner), Method: rv.Method, Version: rv.Version + 1},
			} {
				if _, err := root.Open(other, sealed); err == nil {
					t.Errorf("frozen record opened under %+v", other)
				}
			}
		}
	})
	t.Run("session tokens", func(t *testing.T) {
		if len(v.SessionTokens) == 0 {
			t.Fatal("no token vectors")
		}
		for _, tv := range v.SessionTokens {
			st := root.SessionTokens(func() time.Time { return time.Unix(tv.Now, 0) })
			c, err := st.Verify(tv.Token)
			if err != nil || c.UserID != tv.UserID || c.Expires != tv.Exp {
				t.Errorf("frozen session token for %s does not verify (%v %+v): tokens in apps' hands would be refused", tv.UserID, err, c)
			}
			flipped := []byte(tv.Token)
			flipped[len(flipped)-2] ^= 1
			if _, err := st.Verify(string(flipped)); err == nil {
				t.Error("a token with a flipped byte verified")
			}
		}
	})
}

// writeVectors makes the vectors with today's code (-update-vectors).
func writeVectors(t *testing.T) {
	v := vectors{
		Comment: "Frozen formats of enclave (see vectors_test.go). Test data only: this root key protects nothing.",
		RootKey: "6b657977617264656e207465737420766563746f7273206f6e6c792030303031",
		Subkeys: map[string]string{},
	}
	root := vectorRoot(t, v.RootKey)
	for _, label := range subkeyLabels {
		k := root.Subkey(label)
		v.Subkeys[label] = hex.EncodeToString(k.Reveal())
	}
	v.RootID = root.RootID()
	k, err := root.HPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	v.HPKEPublicKey = hex.EncodeToString(k.PublicKey().Bytes())
	for i, b := range []Binding{
		{Kind: "key", Owner: "user:alice", Method: "PASSKEY", Version: 1},
		{Kind: "key", Owner: "firebase:proj-a//uid-1", Method: "firebase", Version: 7},
		{Kind: kindPrior, Owner: "portal:client-1", Method: "PASSWORD", Version: 2},
	} {
		pt := bytes.Repeat([]byte{byte(0xa0 + i)}, 32+i)
		sealed, err := root.Seal(b, pt)
		if err != nil {
			t.Fatal(err)
		}
		v.Records = append(v.Records, recordVector{Kind: b.Kind, Owner: string(b.Owner), Method: b.Method, Version: b.Version, Plaintext: hex.EncodeToString(pt), Sealed: hex.EncodeToString(sealed)})
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	st := root.SessionTokens(func() time.Time { return now })
	for _, u := range []string{"alice", "bob@example.com"} {
		tok, exp := st.Mint(u, 10*time.Minute)
		v.SessionTokens = append(v.SessionTokens, tokenVector{Now: now.Add(time.Minute).Unix(), Token: tok, UserID: u, Exp: exp.Unix()})
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
