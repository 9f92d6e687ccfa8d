package firebase

import (
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"time"
)

// sigCacheSize bounds the signature cache.
const sigCacheSize = 65536

// sigCache remembers RSA signatures already verified, so an app that sends
// the same ID token many times (tokens live an hour) pays the RSA check
// once. It skips nothing else: every claim and policy is checked on every
// request, and a hit counts only for the exact token bytes (the key is
// SHA-256 of signing input and signature), under the very same public key
// object of the current key set (a rotated or reloaded set misses), and
// only until the token's exp.
type sigCache struct {
	mu sync.RWMutex
	m  map[[32]byte]sigEntry
}

type sigEntry struct {
	key *rsa.PublicKey
	exp time.Time
}

func sigDigest(input string, sig []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(input))
	h.Write([]byte{0})
	h.Write(sig)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

func (c *sigCache) verified(input string, sig []byte, key *rsa.PublicKey, now time.Time) bool {
	d := sigDigest(input, sig)
	c.mu.RLock()
	e, ok := c.m[d]
	c.mu.RUnlock()
	return ok && e.key == key && now.Before(e.exp)
}

func (c *sigCache) remember(input string, sig []byte, key *rsa.PublicKey, exp time.Time) {
	d := sigDigest(input, sig)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]sigEntry)
	}
	if len(c.m) >= sigCacheSize {
		// Drop expired entries, then half of the rest (map order is random).
		now := time.Now()
		for k, e := range c.m {
			if !now.Before(e.exp) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < sigCacheSize/2 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[d] = sigEntry{key: key, exp: exp}
}
