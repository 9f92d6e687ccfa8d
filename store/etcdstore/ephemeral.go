package etcdstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keywarden/keywarden/store"
)

// Ephemeral is the etcd implementation of [store.Ephemeral]: the state
// every node of a cluster must see the same way (open ceremonies, step-up
// proofs, failure budgets), shared through the same etcd as the records.
//
//	<prefix>/.eph/<key>   8 bytes big endian: the end (Unix ns) ‖ 1 byte 'v' (value) or 'c' (counter) ‖ the value
//
// Every operation is one linearizable etcd request or a compare-and-swap
// loop of them: PutIfAbsent is a transaction "if the key was never
// created, put it"; Take is one delete that returns the previous value
// (of two deletes of one key, exactly one gets it back: take-once across
// the cluster, one round trip); Incr reads the counter and writes it back
// if its mod revision has not moved. They do not touch the records'
// transaction fence, so they never conflict with record transactions.
//
// The end written in the value decides expiry (the caller's clock); etcd
// leases only collect what is left behind. One lease serves every key
// that ends within the same second (granted once per second at most, with
// a second of slack), so a busy node creates about one lease a second
// instead of one per ceremony. The keys are not in [Store.WriteTo]'s dump.
type Ephemeral struct {
	s      *Store
	prefix string

	mu      sync.Mutex
	leases  map[int64]clientv3.LeaseID // end second (Unix) → lease lasting until then
	granted uint64
}

var (
	_ store.Ephemeral        = (*Ephemeral)(nil)
	_ store.EphemeralWatcher = (*Ephemeral)(nil)
)

// ephemeralDir is the key space of ephemeral state under the prefix.
const ephemeralDir = ".eph/"

// Ephemeral returns the store's shared ephemeral state ([store.EphemeralBackend]).
func (s *Store) Ephemeral() store.Ephemeral { return s.eph }

func newEphemeral(s *Store) *Ephemeral {
	return &Ephemeral{s: s, prefix: s.prefix + ephemeralDir, leases: map[int64]clientv3.LeaseID{}}
}

// LeasesGranted is how many leases this node granted (one per second of
// expiry at most).
func (e *Ephemeral) LeasesGranted() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.granted
}

func (e *Ephemeral) key(k string) (string, error) {
	if k == "" {
		return "", errors.New("etcdstore: empty ephemeral key")
	}
	return e.prefix + k, nil
}

const (
	kindValue   = 'v'
	kindCounter = 'c'
)

func envelope(end time.Time, kind byte, v []byte) string {
	b := make([]byte, 9, 9+len(v))
	binary.BigEndian.PutUint64(b, uint64(end.UnixNano()))
	b[8] = kind
	return string(append(b, v...))
}

func parseEnvelope(b []byte) (end time.Time, kind byte, v []byte, err error) {
	if len(b) < 9 {
		return time.Time{}, 0, nil, fmt.Errorf("etcdstore: ephemeral value of %d bytes", len(b))
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))), b[8], b[9:], nil
}

// lease returns a lease that outlives ttl from now (real time) by one to
// two seconds, shared by every key ending in the same second.
func (e *Ephemeral) lease(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	now := time.Now()
	ttl = max(ttl, 0)
	end := now.Add(ttl).Unix() + 2
	e.mu.Lock()
	defer e.mu.Unlock()
	if id, ok := e.leases[end]; ok {
		return id, nil
	}
	for s := range e.leases {
		if s <= now.Unix()+1 {
			delete(e.leases, s)
		}
	}
	resp, err := e.s.cli.Grant(ctx, end-now.Unix())
	if err != nil {
		return 0, e.s.wrap(err)
	}
	e.granted++
	e.leases[end] = resp.ID
	return resp.ID, nil
}

// forgetLeases drops the cached leases (one was found expired or revoked).
func (e *Ephemeral) forgetLeases() {
	e.mu.Lock()
	clear(e.leases)
	e.mu.Unlock()
}

// withLease runs op (a transaction using a lease for ttl), granting again once
// when the lease it used is gone.
func (e *Ephemeral) withLease(ctx context.Context, ttl time.Duration, op func(clientv3.LeaseID) (bool, error)) (bool, error) {
	for attempt := 0; ; attempt++ {
		id, err := e.lease(ctx, ttl)
		if err != nil {
			return false, err
		}
		ok, err := op(id)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			e.forgetLeases()
			continue
		}
		if err != nil {
			return false, e.s.wrap(err)
		}
		return ok, nil
	}
}

// PutIfAbsent implements [store.Ephemeral].
func (e *Ephemeral) PutIfAbsent(ctx context.Context, key string, value []byte, now time.Time, ttl time.Duration) (bool, error) {
	k, err := e.key(key)
	if err != nil {
		return false, err
	}
	ctx, leave, err := e.s.enter(ctx)
	if err != nil {
		return false, err
	}
	defer leave()
	v := envelope(now.Add(ttl), kindValue, value)
	for range maxAttempts {
		var prev *clientv3.GetResponse
		ok, err := e.withLease(ctx, ttl, func(id clientv3.LeaseID) (bool, error) {
			resp, err := e.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
				Then(clientv3.OpPut(k, v, clientv3.WithLease(id))).Else(clientv3.OpGet(k)).Commit()
			if err != nil {
				return false, err
			}
			if !resp.Succeeded {
				prev = (*clientv3.GetResponse)(resp.Responses[0].GetResponseRange())
			}
			return resp.Succeeded, nil
		})
		if err != nil || ok {
			return ok, err
		}
		if len(prev.Kvs) == 0 {
			continue // deleted in between
		}
		end, _, _, perr := parseEnvelope(prev.Kvs[0].Value)
		if perr == nil && now.Before(end) {
			return false, nil
		}
		// Held but past its end: replace it, unless it changed meanwhile.
		mod := prev.Kvs[0].ModRevision
		ok, err = e.withLease(ctx, ttl, func(id clientv3.LeaseID) (bool, error) {
			resp, err := e.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", mod)).
				Then(clientv3.OpPut(k, v, clientv3.WithLease(id))).Commit()
			if err != nil {
				return false, err
			}
			return resp.Succeeded, nil
		})
		if err != nil || ok {
			return ok, err
		}
	}
	return false, fmt.Errorf("etcdstore: ephemeral put conflicted %d times in a row", maxAttempts)
}

// Take implements [store.Ephemeral]: one delete that returns what it
// deleted.
func (e *Ephemeral) Take(ctx context.Context, key string, now time.Time) ([]byte, error) {
	k, err := e.key(key)
	if err != nil {
		return nil, err
	}
	ctx, leave, err := e.s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	resp, err := e.s.cli.Delete(ctx, k, clientv3.WithPrevKV())
	if err != nil {
		return nil, e.s.wrap(err)
	}
	if len(resp.PrevKvs) == 0 {
		return nil, store.ErrNotFound
	}
	end, kind, v, err := parseEnvelope(resp.PrevKvs[0].Value)
	if err != nil {
		return nil, err
	}
	if kind != kindValue {
		return nil, store.ErrNotFound
	}
	if !now.Before(end) {
		return nil, store.ErrExpired
	}
	return v, nil
}

// Incr implements [store.Ephemeral]: read, then write back if unchanged.
func (e *Ephemeral) Incr(ctx context.Context, key string, now time.Time, period time.Duration) (time.Time, error) {
	k, err := e.key(key)
	if err != nil {
		return time.Time{}, err
	}
	ctx, leave, err := e.s.enter(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer leave()
	for range maxAttempts {
		resp, err := e.s.cli.Get(ctx, k)
		if err != nil {
			return time.Time{}, e.s.wrap(err)
		}
		until := now
		cmp := clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
		if len(resp.Kvs) == 1 {
			if end, kind, _, err := parseEnvelope(resp.Kvs[0].Value); err == nil && kind == kindCounter {
				until = end
			}
			cmp = clientv3.Compare(clientv3.ModRevision(k), "=", resp.Kvs[0].ModRevision)
		}
		until = store.LeakyIncr(until, now, period)
		ok, err := e.withLease(ctx, until.Sub(now), func(id clientv3.LeaseID) (bool, error) {
			r, err := e.s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(k, envelope(until, kindCounter, nil), clientv3.WithLease(id))).Commit()
			if err != nil {
				return false, err
			}
			return r.Succeeded, nil
		})
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return until, nil
		}
	}
	return time.Time{}, fmt.Errorf("etcdstore: ephemeral counter conflicted %d times in a row", maxAttempts)
}

// Until implements [store.Ephemeral]: one linearizable read.
func (e *Ephemeral) Until(ctx context.Context, key string, now time.Time) (time.Time, error) {
	k, err := e.key(key)
	if err != nil {
		return time.Time{}, err
	}
	ctx, leave, err := e.s.enter(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer leave()
	resp, err := e.s.cli.Get(ctx, k)
	if err != nil {
		return time.Time{}, e.s.wrap(err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, nil
	}
	end, kind, _, err := parseEnvelope(resp.Kvs[0].Value)
	if err != nil || kind != kindCounter {
		return time.Time{}, err
	}
	return end, nil
}

// Reset implements [store.Ephemeral].
func (e *Ephemeral) Reset(ctx context.Context, key string) error {
	k, err := e.key(key)
	if err != nil {
		return err
	}
	ctx, leave, err := e.s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	if _, err := e.s.cli.Delete(ctx, k); err != nil {
		return e.s.wrap(err)
	}
	return nil
}

// WatchRemoved implements [store.EphemeralWatcher] with an etcd watch on
// the prefix's delete events (takes, resets and lease expiries alike). It
// returns once etcd has created the watch (or after 5 s: then it is
// created in the background), and watches in a goroutine that ends with
// ctx or when the store closes. A watch that breaks (a compaction, a lost
// leader) starts again from the current revision: events in between are
// missed, which only delays what they would have released.
func (e *Ephemeral) WatchRemoved(ctx context.Context, prefix string, fn func(key string)) {
	full := e.prefix + prefix
	watch := func() clientv3.WatchChan {
		return e.s.cli.Watch(clientv3.WithRequireLeader(ctx), full, clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	}
	deliver := func(resp clientv3.WatchResponse) {
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				fn(string(ev.Kv.Key[len(e.prefix):]))
			}
		}
	}
	wch := watch()
	select {
	case resp, ok := <-wch:
		if ok {
			deliver(resp)
		}
	case <-time.After(5 * time.Second):
	}
	go func() {
		for {
			for resp := range wch {
				deliver(resp)
			}
			// The channel closed: the context ended, the client closed, or
			// the watch was cancelled; pause before watching again.
			select {
			case <-ctx.Done():
				return
			case <-e.s.cli.Ctx().Done():
				return
			case <-time.After(time.Second):
			}
			if e.s.closed.Load() {
				return
			}
			wch = watch()
		}
	}()
}
