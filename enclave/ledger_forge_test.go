package enclave

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sort"
	"testing"

	"github.com/keywarden/keywarden/store"
)

// readState reads a stopped store file: its range entries and covered records.
func readState(t *testing.T, path string) (entries map[string][]byte, starts []string, recs []struct {
	pos []byte
	b   store.Bucket
	k   []byte
	v   []byte
}) {
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	entries = map[string][]byte{}
	pre := store.RollbackRangeKey(nil)
	err = db.View(context.Background(), func(tx *store.Tx) error {
		if err := tx.ForEachMeta(pre, func(k store.MetaKey, v []byte) error {
			s := string(k[len(pre):])
			entries[s] = bytes.Clone(v)
			starts = append(starts, s)
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEachCovered(func(b store.Bucket, k, v []byte) error {
			recs = append(recs, struct {
				pos []byte
				b   store.Bucket
				k   []byte
				v   []byte
			}{store.Pos(nil, b, k), b, bytes.Clone(k), bytes.Clone(v)})
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(starts)
	return
}

// TestRangeEntriesNotForgeableByXOR: an attacker with an old copy and the
// current file computes, for every range whose records changed, the XOR
// of its old and new stored entry, finds by Gaussian elimination a subset
// of ranges whose XORs cancel, and puts back those ranges' old records and
// old entries together. Were T the plain XOR of the stored entries, the
// store would start and release the old keys (a review found this); T is a
// XOR of secret PRF values of the entries, so it is refused.
func TestRangeEntriesNotForgeableByXOR(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	opts := RollbackOptions{RangeMax: 4}
	rb, err := h.start(opts)
	if err != nil {
		t.Fatal(err)
	}
	const N = 1000
	c := NewCustody(h.db, h.root, CustodyOptions{})
	fillUsers(t, c, N)
	rb.Close()
	h.stop()
	old := filepath.Join(t.TempDir(), "old.db")
	copyFile(t, h.path, old)

	rb, err = h.start(opts)
	if err != nil {
		t.Fatal(err)
	}
	c = NewCustody(h.db, h.root, CustodyOptions{})
	for i := range N {
		if _, err := c.PutKey(ctx, UserOwner(userName(i)), "PASSKEY", []byte(userName(i)+"-v2"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rb.Close()
	h.stop()

	oe, os_, orecs := readState(t, old)
	ne, ns, _ := readState(t, h.path)
	_ = os_
	// candidate ranges: keys bucket, same start and same end in both copies.
	nextOf := func(starts []string, s string) string {
		i := sort.SearchStrings(starts, s)
		if i+1 < len(starts) {
			return starts[i+1]
		}
		return "\xff\xff"
	}
	type cand struct {
		start, end string
		delta      [32]byte
	}
	var cands []cand
	kpre := string(store.Pos(nil, store.BucketKeys, nil))
	for _, s := range ns {
		if len(s) < len(kpre) || s[:len(kpre)] != kpre {
			continue
		}
		ov, ok := oe[s]
		if !ok || bytes.Equal(ov, ne[s]) || nextOf(os_, s) != nextOf(ns, s) {
			continue
		}
		var d [32]byte
		for j := range d {
			d[j] = ov[j] ^ ne[s][j]
		}
		cands = append(cands, cand{s, nextOf(ns, s), d})
	}
	t.Logf("%d candidate ranges", len(cands))
	if len(cands) <= 256 {
		t.Fatalf("only %d candidate ranges: the test needs more than 256", len(cands))
	}
	// Gaussian elimination over GF(2)^256 with combination tracking.
	type row struct {
		v   [32]byte
		mix []bool
	}
	var basis []row
	var pivots []int
	var subset []int
	for ci, cd := range cands {
		r := row{v: cd.delta, mix: make([]bool, len(cands))}
		r.mix[ci] = true
		for bi, b := range basis {
			p := pivots[bi]
			if r.v[p/8]&(1<<(p%8)) != 0 {
				for j := range r.v {
					r.v[j] ^= b.v[j]
				}
				for j := range r.mix {
					r.mix[j] = r.mix[j] != b.mix[j]
				}
			}
		}
		zero := true
		p := -1
		for j := 0; j < 256; j++ {
			if r.v[j/8]&(1<<(j%8)) != 0 {
				zero, p = false, j
				break
			}
		}
		if zero {
			for j, m := range r.mix {
				if m {
					subset = append(subset, j)
				}
			}
			break
		}
		basis = append(basis, r)
		pivots = append(pivots, p)
	}
	if subset == nil {
		t.Fatal("no dependency")
	}
	t.Logf("reverting %d ranges to the old copy", len(subset))
	var reverted []string
	spliceOffline(t, h.path, func(tx *store.Tx) error {
		for _, j := range subset {
			cd := cands[j]
			// delete current records in range
			var del [][]byte
			if err := tx.ForEachCoveredFrom([]byte(cd.start), func(b store.Bucket, k, v []byte) error {
				if bytes.Compare(store.Pos(nil, b, k), []byte(cd.end)) >= 0 {
					return store.ErrStop
				}
				del = append(del, bytes.Clone(k))
				return nil
			}); err != nil {
				return err
			}
			for _, k := range del {
				if err := tx.Delete(store.BucketKeys, k); err != nil {
					return err
				}
			}
			for _, r := range orecs {
				if bytes.Compare(r.pos, []byte(cd.start)) >= 0 && bytes.Compare(r.pos, []byte(cd.end)) < 0 {
					if err := tx.Put(r.b, r.k, r.v); err != nil {
						return err
					}
					reverted = append(reverted, string(r.k))
				}
			}
			if err := tx.PutMeta(store.RollbackRangeKey([]byte(cd.start)), oe[cd.start]); err != nil {
				return err
			}
		}
		return nil
	})
	// The forged store: the reverted ranges' entries XOR as the current
	// ones did, yet T is a XOR of secret values of the entries, so the
	// start refuses it, with a full check or range by range.
	if _, err := h.start(opts); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("%d ranges reverted with entries chosen to keep their XOR: start err = %v, want ErrRecordsAltered", len(subset), err)
	}
	h.stop()
	if _, err := h.start(lazyOpts()); !errors.Is(err, ErrRecordsAltered) {
		t.Fatalf("the same, checked range by range: start err = %v, want ErrRecordsAltered", err)
	}
	h.stop()
	if len(reverted) == 0 {
		t.Fatal("the attack reverted no record")
	}
}
