package passkey

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
)

type ceremonyKind uint8

const (
	kindRegistration ceremonyKind = iota + 1
	kindAuthentication
	// kindProof is a finished authentication kept for CeremonyTTL: naming
	// it at registration/begin proves a fresh assertion of the user.
	kindProof
)

// ceremony is the server-side state of one begun ceremony. It lives only
// in memory (DECISIONS 23: one active node).
type ceremony struct {
	id      string
	kind    ceremonyKind
	rp      *relyingParty
	subject *Subject // nil: discoverable authentication
	prefix  string   // discoverable: owners the credential may belong to
	session webauthn.SessionData
	addr    string
	expires time.Time
	removed bool

	recipient []byte // authentication: the HPKE key the challenge commits to
	stepUp    bool   // registration: authorized by a fresh assertion of the user
	keyStored bool   // registration: a key was stored when the ceremony began
}

// ceremonies holds open ceremonies with a global and a per-address cap.
// Every entry has the same lifetime, so expiry order is insertion order:
// a FIFO queue finds expired entries in amortized O(1).
type ceremonies struct {
	mu         sync.Mutex
	m          map[string]*ceremony
	perAddr    map[string]int
	queue      []*ceremony
	max        int
	maxPerAddr int
}

func newCeremonies(max, maxPerAddr int) *ceremonies {
	return &ceremonies{m: map[string]*ceremony{}, perAddr: map[string]int{}, max: max, maxPerAddr: maxPerAddr}
}

func newCeremonyID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sweep drops expired entries from the front of the queue; c.mu is held.
func (cs *ceremonies) sweep(now time.Time) (expired int) {
	i := 0
	for ; i < len(cs.queue); i++ {
		c := cs.queue[i]
		if !c.removed && now.Before(c.expires) {
			break
		}
		if !c.removed {
			cs.remove(c)
			expired++
		}
		cs.queue[i] = nil
	}
	cs.queue = cs.queue[i:]
	// Entries taken out of order stay in the queue until they reach the
	// front; compact when they dominate, so memory follows the live count.
	if len(cs.queue) > 2*len(cs.m)+64 {
		live := make([]*ceremony, 0, len(cs.m))
		for _, c := range cs.queue {
			if !c.removed {
				live = append(live, c)
			}
		}
		cs.queue = live
	}
	return expired
}

func (cs *ceremonies) remove(c *ceremony) {
	c.removed = true
	delete(cs.m, c.id)
	if n := cs.perAddr[c.addr] - 1; n > 0 {
		cs.perAddr[c.addr] = n
	} else {
		delete(cs.perAddr, c.addr)
	}
}

// add stores c, refusing when a cap is reached. It reports how many
// expired ceremonies it swept (for metrics).
func (cs *ceremonies) add(now time.Time, c *ceremony) (expired int, err error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	expired = cs.sweep(now)
	if cs.perAddr[c.addr] >= cs.maxPerAddr {
		return expired, ErrTooManyAddress.WithRetry(cs.retryAfter(now, c.addr))
	}
	if len(cs.m) >= cs.max {
		return expired, ErrCeremoniesFull.WithRetry(cs.retryAfter(now, ""))
	}
	cs.m[c.id] = c
	cs.perAddr[c.addr]++
	cs.queue = append(cs.queue, c)
	return expired, nil
}

// put stores c, evicting the oldest entries when the cap is reached
// (for proofs: losing an old one only means authenticating again).
func (cs *ceremonies) put(now time.Time, c *ceremony) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.sweep(now)
	for len(cs.m) >= cs.max && len(cs.queue) > 0 {
		if old := cs.queue[0]; !old.removed {
			cs.remove(old)
		}
		cs.queue[0] = nil
		cs.queue = cs.queue[1:]
	}
	cs.m[c.id] = c
	cs.perAddr[c.addr]++
	cs.queue = append(cs.queue, c)
}

// retryAfter is when the oldest open ceremony (of addr, or any) expires.
func (cs *ceremonies) retryAfter(now time.Time, addr string) time.Duration {
	for _, c := range cs.queue {
		if !c.removed && (addr == "" || c.addr == addr) {
			if d := c.expires.Sub(now); d > time.Second {
				return d.Round(time.Second)
			}
			break
		}
	}
	return time.Second
}

// take removes and returns the ceremony id of kind. A ceremony of another
// kind is left in place and reported as unknown.
func (cs *ceremonies) take(now time.Time, id string, kind ceremonyKind) (*ceremony, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.m[id]
	if !ok || c.kind != kind {
		return nil, ErrCeremonyUnknown
	}
	cs.remove(c)
	if !now.Before(c.expires) {
		return nil, ErrCeremonyExpired
	}
	return c, nil
}

// len is the number of open ceremonies (for metrics and tests).
func (cs *ceremonies) len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}
