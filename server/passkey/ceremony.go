package passkey

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/keywarden/keywarden/internal/ratelimit"
)

type ceremonyKind uint8

const (
	kindRegistration ceremonyKind = iota + 1
	kindAuthentication
)

// ceremony is the server-side state of one begun ceremony, stored in the
// service's ephemeral state (shared.go) between begin and finish; the
// table below keeps only its id, address and end, for this node's caps.
type ceremony struct {
	id      string
	kind    ceremonyKind
	rp      *relyingParty
	subject *Subject // nil: discoverable authentication
	prefix  string   // discoverable: owners the credential may belong to
	session webauthn.SessionData
	addr    string // the client address as received
	addrKey string // its limiting key (IPv6 /64), set by add
	netKey  string // its network (IPv6 /48, IPv4 /24), set by add
	expires time.Time
	removed bool
	key     string // in the table: its key in the ephemeral store (ceremonyKey)

	recipient []byte // authentication: the HPKE key the challenge commits to
	stepUp    bool   // registration: authorized by a fresh assertion of the user
	keyStored bool   // registration: a key was stored when the ceremony began
	claim     bool   // registration: claims the unclaimed imported key (no step-up)
}

// ceremonies counts open ceremonies begun on this node with a global cap and two caps per
// client: per address (IPv6 grouped by /64, ratelimit.AddrKey) and per
// network (IPv6 /48, IPv4 /24, ratelimit.NetworkKey). Each client's share
// is a fraction of the global cap, so one network rotating through its
// addresses cannot take every ceremony and deny begin to everyone else.
// Every entry has the same lifetime, so expiry order is insertion order:
// a FIFO queue finds expired entries in amortized O(1).
type ceremonies struct {
	mu         sync.Mutex
	m          map[string]*ceremony
	byKey      map[string]*ceremony // by ephemeral store key
	perAddr    map[string]int
	perNet     map[string]int
	queue      []*ceremony
	max        int
	maxPerAddr int
	maxPerNet  int
}

// Shares of the global cap: one address (/64) at most half of it, one
// network at most an eighth (but never less than one address's share).
const (
	addrShareDiv = 2
	netShareDiv  = 8
)

func newCeremonies(total, maxPerAddr int) *ceremonies {
	maxPerAddr = min(maxPerAddr, max(1, total/addrShareDiv))
	maxPerNet := max(maxPerAddr, total/netShareDiv)
	return &ceremonies{m: map[string]*ceremony{}, byKey: map[string]*ceremony{}, perAddr: map[string]int{}, perNet: map[string]int{},
		max: total, maxPerAddr: maxPerAddr, maxPerNet: maxPerNet}
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
	delete(cs.byKey, c.key)
	decrement(cs.perAddr, c.addrKey)
	decrement(cs.perNet, c.netKey)
}

func decrement(m map[string]int, k string) {
	if n := m[k] - 1; n > 0 {
		m[k] = n
	} else {
		delete(m, k)
	}
}

// add stores c, refusing when a cap is reached. It reports how many
// expired ceremonies it swept (for metrics).
func (cs *ceremonies) add(now time.Time, c *ceremony) (expired int, err error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	expired = cs.sweep(now)
	c.addrKey, c.netKey = ratelimit.AddrKey(c.addr), ratelimit.NetworkKey(c.addr)
	if cs.perAddr[c.addrKey] >= cs.maxPerAddr {
		return expired, ErrTooManyAddress.WithRetry(cs.retryAfter(now, func(o *ceremony) bool { return o.addrKey == c.addrKey }))
	}
	if cs.perNet[c.netKey] >= cs.maxPerNet {
		return expired, ErrTooManyAddress.WithRetry(cs.retryAfter(now, func(o *ceremony) bool { return o.netKey == c.netKey }))
	}
	if len(cs.m) >= cs.max {
		return expired, ErrCeremoniesFull.WithRetry(cs.retryAfter(now, nil))
	}
	cs.insert(c)
	return expired, nil
}

// insert adds c; cs.mu is held.
func (cs *ceremonies) insert(c *ceremony) {
	cs.m[c.id] = c
	cs.byKey[c.key] = c
	cs.perAddr[c.addrKey]++
	cs.perNet[c.netKey]++
	cs.queue = append(cs.queue, c)
}

// retryAfter is when the oldest open ceremony (matching of, or any)
// expires.
func (cs *ceremonies) retryAfter(now time.Time, of func(*ceremony) bool) time.Duration {
	for _, c := range cs.queue {
		if !c.removed && (of == nil || of(c)) {
			if d := c.expires.Sub(now); d > time.Second {
				return d.Round(time.Second)
			}
			break
		}
	}
	return time.Second
}

// forget drops the ceremony id from the table (taken, on this node):
// it no longer counts against the caps. A ceremony finished on another
// node of a cluster is dropped when the store's watch tells (forgetKey),
// or at its expiry.
func (cs *ceremonies) forget(id string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c, ok := cs.m[id]; ok {
		cs.remove(c)
	}
}

// forgetKey drops the ceremony stored under key (taken on another node
// of a cluster, or expired, as the store's watch tells) and reports
// whether it was past its end.
func (cs *ceremonies) forgetKey(now time.Time, key string) (expired bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c, ok := cs.byKey[key]; ok {
		cs.remove(c)
		return !now.Before(c.expires)
	}
	return false
}

// len is the number of open ceremonies (for metrics and tests).
func (cs *ceremonies) len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}
