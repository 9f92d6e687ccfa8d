package passkey

import (
	"runtime"
	"sync"
	"weak"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/store"
)

// credCache keeps decoded credential records of a store that only this
// process writes (a single node: store.DB.Shared is false), so a release
// reads its credentials from memory: the owner's list at begin, the
// asserted credential at finish. Without it each was a store transaction,
// a record decode and a copy.
//
// It can never answer with a record older than the last write this
// process finished: every write of a credential (registration, counter
// and flag updates, revocation, reset, deletion) drops the owner's list
// and the written ids after its commit (invalidate), and a record read
// from the store enters the cache only if no write finished since the
// read began (the generation check in putID and putOwner), so a read that
// raced a write cannot put the old record back. The counter check does
// not rely on it either: a counter change is decided in the write
// transaction, on the record as stored.
//
// Absence is cached too (an id no record has, an owner without
// credentials): otherwise an id or a user that exists would be answered
// from memory and one that does not from the store, every time, and the
// difference, averaged over many tries, would tell a stranger which user
// ids and credential ids are real (decisions/07). A registration drops
// the absence of its id and owner like any write.
//
// Records in the cache are shared: callers get a copy of the struct, and
// must not change the bytes of its slices (none does).
type credCache struct {
	mu      sync.RWMutex
	gen     uint64                                     // counts finished writes
	byID    map[string]*credential                     // nil: no such record
	byOwner map[enclave.Owner]map[string][]*credential // owner → rpID ("" all) → list
}

// maxCachedCredentials bounds each of the two maps; beyond it an
// arbitrary entry makes room.
const maxCachedCredentials = 20000

// maxCachedIDLen bounds the ids the cache keeps (a stranger chooses the
// ids it looks up): WebAuthn credential ids are at most 1023 bytes;
// longer ones are always read from the store.
const maxCachedIDLen = 1023

var credCaches struct {
	mu sync.Mutex
	m  map[weak.Pointer[store.DB]]*credCache
}

// credCacheFor is the cache of db, shared by every Service over it (a
// write through one invalidates what the others read), or nil when other
// nodes write db too.
func credCacheFor(db *store.DB) *credCache {
	if db.Shared() {
		return nil
	}
	credCaches.mu.Lock()
	defer credCaches.mu.Unlock()
	k := weak.Make(db)
	if c, ok := credCaches.m[k]; ok {
		return c
	}
	if credCaches.m == nil {
		credCaches.m = map[weak.Pointer[store.DB]]*credCache{}
	}
	c := &credCache{byID: map[string]*credential{}, byOwner: map[enclave.Owner]map[string][]*credential{}}
	credCaches.m[k] = c
	runtime.AddCleanup(db, func(k weak.Pointer[store.DB]) {
		credCaches.mu.Lock()
		delete(credCaches.m, k)
		credCaches.mu.Unlock()
	}, k)
	return c
}

// generation is read before a store read whose result may be cached.
func (cc *credCache) generation() uint64 {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	return cc.gen
}

// getID reports whether the cache knows id, and its record (nil: there is
// none).
func (cc *credCache) getID(id []byte) (*credential, bool) {
	cc.mu.RLock()
	c, ok := cc.byID[string(id)]
	cc.mu.RUnlock()
	if !ok || c == nil {
		return nil, ok
	}
	cp := *c
	return &cp, true
}

// putID keeps c as the record of id (nil: there is none), read from the
// store since generation gen.
func (cc *credCache) putID(gen uint64, id []byte, c *credential) {
	if len(id) > maxCachedIDLen {
		return
	}
	var cp *credential
	if c != nil {
		x := *c
		cp = &x
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if gen != cc.gen {
		return // a write finished since the read began
	}
	if len(cc.byID) >= maxCachedCredentials {
		for k := range cc.byID {
			delete(cc.byID, k)
			break
		}
	}
	cc.byID[string(id)] = cp
}

func (cc *credCache) getOwner(owner enclave.Owner, rpID string) ([]*credential, bool) {
	cc.mu.RLock()
	list, ok := cc.byOwner[owner][rpID]
	cc.mu.RUnlock()
	if !ok {
		return nil, false
	}
	out := make([]*credential, len(list))
	copies := make([]credential, len(list))
	for i, c := range list {
		copies[i] = *c
		out[i] = &copies[i]
	}
	return out, true
}

func (cc *credCache) putOwner(gen uint64, owner enclave.Owner, rpID string, cs []*credential) {
	list := make([]*credential, len(cs))
	copies := make([]credential, len(cs))
	for i, c := range cs {
		copies[i] = *c
		list[i] = &copies[i]
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if gen != cc.gen {
		return
	}
	m := cc.byOwner[owner]
	if m == nil {
		if len(cc.byOwner) >= maxCachedCredentials {
			for k := range cc.byOwner {
				delete(cc.byOwner, k)
				break
			}
		}
		m = map[string][]*credential{}
		cc.byOwner[owner] = m
	}
	m[rpID] = list
}

// invalidate follows a write (finished or failed) of owner's credentials
// ids: their records and the owner's lists are read from the store again.
func (cc *credCache) invalidate(owner enclave.Owner, ids ...[]byte) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	delete(cc.byOwner, owner)
	for _, id := range ids {
		delete(cc.byID, string(id))
	}
}
