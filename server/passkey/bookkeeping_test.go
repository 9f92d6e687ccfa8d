package passkey

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCeremonyBookkeepingAllocs bounds what keeping a ceremony costs on one
// node between begin and finish (count it against the caps, store it, take
// it): the key of the in-memory entry is made once per ceremony and
// without a digest (the state never leaves the process), where it used to
// be formatted and SHA-256-hashed three times (25 allocations per round
// trip). Allocation counts are deterministic: no timing is asserted.
func TestCeremonyBookkeepingAllocs(t *testing.T) {
	v := newEnv(t, nil)
	ctx := context.Background()
	out, err := v.svc.BeginAuthentication(ctx, AuthenticationRequest{Subject: &Subject{Owner: "user:alice", UserID: "alice"}, ClientAddr: testAddr})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.svc.takeCeremony(ctx, v.svc.now(), out.CeremonyID, kindAuthentication)
	if err != nil {
		t.Fatal(err)
	}
	var failed error
	allocs := testing.AllocsPerRun(200, func() {
		if err := v.svc.addCeremony(ctx, c); err != nil {
			failed = err
			return
		}
		got, err := v.svc.takeCeremony(ctx, v.svc.now(), c.id, kindAuthentication)
		if err != nil || got.id != c.id {
			failed = err
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs > 18 {
		t.Errorf("a ceremony's round trip made %v allocations, want at most 18", allocs)
	}
}

// TestCeremonyKeysOnSharedStore: on a shared store (etcd), whose readers
// must not be able to name a ceremony or a proof, the keys stay digests of
// the ids; in memory they are the ids, prefixed by kind.
func TestCeremonyKeysOnSharedStore(t *testing.T) {
	id := newCeremonyID()
	shared := ephemerals{seal: testAEAD(t)}
	for _, k := range []string{shared.ceremonyKey(kindAuthentication, id), shared.proofKey(id)} {
		if strings.Contains(k, id) {
			t.Errorf("shared key %q names the ceremony id", k)
		}
	}
	if k := shared.ceremonyKey(kindAuthentication, id); k != digestKey("pk/c/2/", id) {
		t.Errorf("shared ceremony key %q is not the digest form", k)
	}
	if k := shared.budgetKey("user:alice"); strings.Contains(k, "alice") {
		t.Errorf("shared budget key %q names the owner", k)
	}
	local := ephemerals{}
	if k := local.budgetKey("user:alice"); k != "pk/u/user:alice" {
		t.Errorf("in-memory budget key %q", k)
	}
	a, r := local.ceremonyKey(kindAuthentication, id), local.ceremonyKey(kindRegistration, id)
	if a == r || !strings.HasSuffix(a, id) || local.proofKey(id) == a {
		t.Errorf("in-memory keys %q %q %q do not keep kinds apart", a, r, local.proofKey(id))
	}
}

func testAEAD(t *testing.T) cipher.AEAD {
	block, err := aes.NewCipher(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

// TestProofAndBudgetAllocs bounds what a release's other bookkeeping costs
// on one node: the step-up proof kept and used, and the owner's failure
// budget checked. In memory the proof is kept as a struct and the
// budget's key is the owner (on a shared store both stay sealed JSON and a
// digest): 7 allocations, where JSON and a SHA-256 per key made 18.
func TestProofAndBudgetAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	v := newEnv(t, nil)
	ctx := context.Background()
	subj := Subject{Owner: "user:alice", UserID: "alice"}
	id := newCeremonyID()
	var failed error
	allocs := testing.AllocsPerRun(200, func() {
		if err := v.svc.putProof(ctx, id, subj, v.svc.rps[0], v.svc.now()); err != nil {
			failed = err
		}
		if err := v.svc.takeProof(ctx, id, subj.Owner, v.svc.rps[0]); err != nil {
			failed = err
		}
		if ok, _, err := v.svc.checkBudget(ctx, subj.Owner, v.svc.now()); err != nil || !ok {
			failed = fmt.Errorf("budget: %v %v", ok, err)
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	t.Logf("%v allocations", allocs)
	if allocs > 8 {
		t.Errorf("proof and budget made %v allocations, want at most 8", allocs)
	}
}

// TestProofInMemoryStillSingleUse: kept as a struct, a proof is still used
// up by its first use, refused for another owner or relying party, and
// refused once expired.
func TestProofInMemoryStillSingleUse(t *testing.T) {
	v := newEnv(t, nil)
	ctx := context.Background()
	subj := Subject{Owner: "user:alice", UserID: "alice"}
	rp := v.svc.rps[0]
	id := newCeremonyID()
	if err := v.svc.putProof(ctx, id, subj, rp, v.svc.now()); err != nil {
		t.Fatal(err)
	}
	if err := v.svc.takeProof(ctx, id, "user:mallory", rp); err != ErrAssertionInvalid {
		t.Fatalf("another owner's proof: %v", err)
	}
	if err := v.svc.takeProof(ctx, id, subj.Owner, rp); err != ErrAssertionInvalid {
		t.Fatalf("a proof tried by another owner first is used up: %v", err)
	}
	id = newCeremonyID()
	if err := v.svc.putProof(ctx, id, subj, rp, v.svc.now()); err != nil {
		t.Fatal(err)
	}
	if err := v.svc.takeProof(ctx, id, subj.Owner, rp); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := v.svc.takeProof(ctx, id, subj.Owner, rp); err != ErrAssertionInvalid {
		t.Fatalf("second use: %v", err)
	}
	id = newCeremonyID()
	if err := v.svc.putProof(ctx, id, subj, rp, v.svc.now()); err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(v.svc.opts.CeremonyTTL + time.Second)
	if err := v.svc.takeProof(ctx, id, subj.Owner, rp); err != ErrAssertionInvalid {
		t.Fatalf("expired: %v", err)
	}
}
