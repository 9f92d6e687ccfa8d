package firebase

import (
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"unsafe"
)

// tokenCacheSize bounds the cache of verified tokens.
const tokenCacheSize = 65536

// tokenCache remembers tokens that passed every check, so an app that
// sends the same ID token many times (tokens live an hour) pays the parse
// and the RSA check once. A hit is only for the exact token bytes (keyed
// by SHA-256 of the whole token, computed once per Verify), only while the very public-key object
// that verified it is the current one for its kid (a rotated or reloaded
// key set misses), and every time claim (exp, iat, nbf, auth_time) and
// every policy is checked again against the clock on each hit; anything
// that does not pass takes the full path. A full cache drops its oldest
// entry for each new one (first in, first out: the order of insertion
// is kept in a ring), in constant time: a flow of never-seen tokens, which
// keeps the cache full, costs each insert one map delete. Expired entries
// are not dropped ahead of their turn: a hit checks exp again, so an
// expired entry only takes a place (at most an hour's worth of tokens).
type tokenCache struct {
	mu   sync.RWMutex
	m    map[[32]byte]tokenEntry
	ring [][32]byte // digests in the order they were added; ring[next] is the oldest once full
	next int
}

type tokenEntry struct {
	key    *rsa.PublicKey
	kid    string
	id     Identity
	ext    claimExtras
	nbf    int64
	hasNbf bool
}

// tokenDigest is the cache key of raw: SHA-256 of its bytes, read in
// place (the token is up to MaxTokenSize bytes; it is not copied).
func tokenDigest(raw string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}

func (c *tokenCache) get(raw string) (tokenEntry, bool) { return c.lookup(tokenDigest(raw)) }

func (c *tokenCache) remember(raw string, e tokenEntry) { c.store(tokenDigest(raw), e) }

func (c *tokenCache) lookup(d [32]byte) (tokenEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[d]
	c.mu.RUnlock()
	return e, ok
}

// store adds e under d; a full cache first drops its oldest entry.
func (c *tokenCache) store(d [32]byte, e tokenEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]tokenEntry)
	}
	if _, ok := c.m[d]; ok {
		c.m[d] = e // the same token again: its place in the order stays
		return
	}
	if len(c.ring) < tokenCacheSize {
		c.ring = append(c.ring, d)
	} else {
		delete(c.m, c.ring[c.next])
		c.ring[c.next] = d
		c.next = (c.next + 1) % tokenCacheSize
	}
	c.m[d] = e
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
