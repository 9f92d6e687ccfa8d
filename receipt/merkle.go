package receipt

import (
	"crypto/sha256"
	"errors"
	"math/bits"
)

// The Merkle tree of a batch is RFC 6962's (Certificate Transparency):
// a leaf hashes as SHA-256(0x00 ‖ leaf data), an inner node as
// SHA-256(0x01 ‖ left ‖ right), and a tree of n leaves splits at the largest
// power of two below n. The prefixes keep a leaf from passing for a node.

// HashLeaf is a leaf's hash.
func HashLeaf(data []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(data)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func hashNode(l, r [sha256.Size]byte) [sha256.Size]byte {
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 1
	copy(buf[1:], l[:])
	copy(buf[1+sha256.Size:], r[:])
	return sha256.Sum256(buf[:])
}

// split is the largest power of two below n (n ≥ 2).
func split(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// Root is the tree hash of leaves (already hashed with [HashLeaf]); at
// least one leaf.
func Root(leaves [][sha256.Size]byte) [sha256.Size]byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := split(len(leaves))
	return hashNode(Root(leaves[:k]), Root(leaves[k:]))
}

// Path is the audit path of leaf i: the sibling hashes from the leaf up.
func Path(leaves [][sha256.Size]byte, i int) [][sha256.Size]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := split(len(leaves))
	if i < k {
		return append(Path(leaves[:k], i), Root(leaves[k:]))
	}
	return append(Path(leaves[k:], i-k), Root(leaves[:k]))
}

var errBadPath = errors.New("receipt: Merkle path does not lead to the signed root")

// rootFromPath recomputes the root of a tree of n leaves from leaf i and
// its path (RFC 9162, 2.1.3.2).
func rootFromPath(leaf [sha256.Size]byte, i, n int, path [][sha256.Size]byte) ([sha256.Size]byte, error) {
	if i < 0 || n < 1 || i >= n {
		return [sha256.Size]byte{}, errBadPath
	}
	fn, sn := uint64(i), uint64(n-1)
	r := leaf
	for _, p := range path {
		if sn == 0 {
			return [sha256.Size]byte{}, errBadPath
		}
		if fn&1 == 1 || fn == sn {
			r = hashNode(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = hashNode(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return [sha256.Size]byte{}, errBadPath
	}
	return r, nil
}
