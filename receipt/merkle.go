package receipt

import (
	"crypto/sha256"
	"errors"
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

// levels builds the tree bottom-up: each level hashes pairs, and a lone
// last node moves up unchanged. That is the same tree as RFC 6962's split
// at the largest power of two (the left part is always a perfect tree).
func levels(leaves [][sha256.Size]byte) [][][sha256.Size]byte {
	lv := [][][sha256.Size]byte{leaves}
	for cur := leaves; len(cur) > 1; {
		next := make([][sha256.Size]byte, (len(cur)+1)/2)
		for j := 0; j+1 < len(cur); j += 2 {
			next[j/2] = hashNode(cur[j], cur[j+1])
		}
		if len(cur)%2 == 1 {
			next[len(next)-1] = cur[len(cur)-1]
		}
		lv = append(lv, next)
		cur = next
	}
	return lv
}

func pathIn(lv [][][sha256.Size]byte, i int) [][sha256.Size]byte {
	return appendPathIn(make([][sha256.Size]byte, 0, len(lv)-1), lv, i)
}

// appendPathIn appends the path of leaf i to p.
func appendPathIn(p [][sha256.Size]byte, lv [][][sha256.Size]byte, i int) [][sha256.Size]byte {
	for _, l := range lv[:len(lv)-1] {
		if sib := i ^ 1; sib < len(l) {
			p = append(p, l[sib])
		}
		i >>= 1
	}
	return p
}

// Root is the tree hash of leaves (already hashed with [HashLeaf]); at
// least one leaf.
func Root(leaves [][sha256.Size]byte) [sha256.Size]byte {
	lv := levels(leaves)
	return lv[len(lv)-1][0]
}

// Path is the audit path of leaf i: the sibling hashes from the leaf up.
func Path(leaves [][sha256.Size]byte, i int) [][sha256.Size]byte {
	return pathIn(levels(leaves), i)
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
