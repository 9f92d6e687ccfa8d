package firebase

import (
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCacheSize bounds the cache of verified tokens.
const tokenCacheSize = 65536

// tokenCache remembers tokens that passed every check, so an app that
// sends the same ID token many times (tokens live an hour) pays the parse
// and the RSA check once. A hit is only for the exact token bytes (keyed
// by SHA-256 of the whole token), only while the very public-key object
// that verified it is the current one for its kid (a rotated or reloaded
// key set misses), and every time claim (exp, iat, nbf, auth_time) and
// every policy is checked again against the clock on each hit; anything
// that does not pass takes the full path. Entries leave at exp.
type tokenCache struct {
	mu sync.RWMutex
	m  map[[32]byte]tokenEntry
}

type tokenEntry struct {
	key    *rsa.PublicKey
	kid    string
	id     Identity
	ext    claimExtras
	nbf    int64
	hasNbf bool
}

func (c *tokenCache) get(raw string) (tokenEntry, bool) {
	d := sha256.Sum256([]byte(raw))
	c.mu.RLock()
	e, ok := c.m[d]
	c.mu.RUnlock()
	return e, ok
}

func (c *tokenCache) remember(raw string, e tokenEntry) {
	d := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]tokenEntry)
	}
	if len(c.m) >= tokenCacheSize {
		// Drop expired entries, then half of the rest (map order is random).
		now := time.Now()
		for k, e := range c.m {
			if !now.Before(e.id.Expiry) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < tokenCacheSize/2 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[d] = e
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
