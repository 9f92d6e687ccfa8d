// Package etcdstore keeps Keywarden's buckets in etcd: a store backend
// for a cluster of appliances, over go.etcd.io/etcd/client/v3.
//
// # Key layout
//
//	<prefix>/<bucket>/<key>    one record; key is the store key's raw bytes (0x00 and 0xFF allowed)
//	<prefix>/.buckets/<bucket> the bucket exists (written by CreateBucket; buckets are never removed)
//	<prefix>/.schema           the schema version, 8 bytes big endian
//	<prefix>/.txn              the transaction fence: every write transaction rewrites it
//	<prefix>/.restoring        present while Restore runs (Open refuses such a prefix)
//	<prefix>/.eph/<key>        ephemeral state shared by the nodes ([Ephemeral]; leased, not dumped)
//
// etcd orders keys byte-wise, as bbolt does, so ForEach walks keys in the
// same order on both backends, and a prefix scan is the exact range
// [<prefix>/<bucket>/<p>, successor of that) — the successor increments the
// last byte below 0xFF, so keys with 0xFF bytes stay inside and the next
// bucket stays out. Bucket names are lower-case letters, digits and '_'
// (the store's contract), so they never collide with the '.' names.
//
// Values reach the store already sealed by the root key: etcd's disks, WAL,
// snapshots and network see ciphertext and identifiers only.
//
// # Transactions
//
// [Store.View] reads at one etcd revision. Its first read is linearizable
// (the read of the first key fn asks for, through the leader's ReadIndex:
// one round trip to the leader and a quorum heartbeat), and the revision
// of its answer is the View's revision R; every further read is a
// serializable read at R on whichever member the client talks to (local,
// no quorum round trip). A member that has not applied R yet answers
// "future revision" and the read is repeated linearizably. So a View never
// answers from state older than the moment it began: a deletion, a block
// or a spent ceremony that committed before the View started is seen. A
// member that has lost its quorum cannot complete the first read: the View
// fails (when its context ends) rather than answering stale.
//
// A View whose context carries a [store.ReadSession] (one request's
// reads: a release's block-list check, then its key record) reads at the
// session's revision when an earlier View of the session fixed one: one
// linearizable round trip per request, not per View. Everything committed
// before the request began is still seen, since the session's revision
// was fixed linearizably after that; an Update through the façade with the
// session's context ends the revision (the request reads its own writes).
//
// [Store.Update] runs fn against a snapshot at R with its writes buffered,
// then commits them in one etcd transaction guarded by what fn read: "if
// every key read, alone or found in a range (ForEach, DeletePrefix), still
// has the mod revision it had at R (0: still absent), and no key of a
// range read has a mod revision past R". A key deleted since R fails its
// own compare; a key created or rewritten in a range fails the range's
// compare (etcd compares every key of [key, range_end)). Every write
// transaction also rewrites the fence (a blind write). A guard that fails
// means another transaction changed what fn read: fn runs again on a
// fresh snapshot (fn may run more than once, as the façade's contract
// already says). Transactions of different nodes that read and write
// different keys and ranges therefore commit side by side (each node's
// group commit and its own rollback record: enclave/rollback_cluster.go);
// what they would lose to each other is exactly what the guard catches.
// The guard is serializable (every value fn read, and every range it
// scanned, is still current when its writes apply). A transaction whose
// compares outnumber both its operations and the server's --max-txn-ops
// ([Options] MaxTxnOps; etcd's default is 128) compares the fence's mod
// revision instead, which any other commit moves.
//
// An Update's first attempt fixes R with a serializable read of the fence
// (no round through the leader: a linearizable read would also wait until
// the member applied every commit in flight, which made the nodes' writers
// wait on one another's commits). R may then be behind; nothing fn
// concluded from it is trusted unless the guard holds afterwards, at the
// leader: at the commit, or — when fn wrote nothing or returned an error
// (a refusal may rest on what it read) — in a linearizable read-only
// transaction of the same compares. A guard that fails runs fn again, and
// every later attempt begins with a linearizable read. So an Update, like
// a View, never acts on or answers from state older than its start.
//
// An Update may also read a single key from the store's read cache (what
// this node last read, wrote or saw in its watch of the prefix: see
// readcache.go) instead of asking etcd: its mod revision joins the guard
// like any other read, so the leader refuses the commit if it is not
// current, and a guard that fails reads back, in the transaction's Else
// branch, the current value of every key it compared, for the next
// attempt (when they do not fit in the request, the keys read are dropped
// from the cache instead, and the next attempt reads them from etcd). An
// overwrite of a key the node knows costs one request: the guarded
// commit. The cache serves one Update at a time (the group
// commit's writer); Updates that run side by side in one process read
// from etcd.
//
// # Limits
//
// One transaction is one etcd request: its keys and values must fit in
// the server's --max-request-bytes (etcd's default is 1.5 MiB; [Options]
// MaxRequestBytes says what the server allows, and a larger transaction is
// refused here with [ErrTooLarge] before it is sent), and its distinct
// written keys must be fewer than the server's --max-txn-ops (default 128:
// raise it to 4096 or more on an external cluster; the group commit puts
// many callers' writes into one transaction).
//
// # Snapshots
//
// [Store.WriteTo] dumps every record under the prefix at one revision, in
// key order, in a checksummed stream ([ReadDump] reads it back): the
// appliance's own backup, of its own records only. etcd's maintenance API
// (Snapshot) copies a whole member's database instead — every prefix, the
// cluster membership and the revision history — which is the operator's
// disaster-recovery copy of the cluster; both are ciphertext only.
package etcdstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keywarden/keywarden/store"
)

// DefaultMaxRequestBytes is etcd's default --max-request-bytes (1.5 MiB).
const DefaultMaxRequestBytes = 3 * 1024 * 1024 / 2

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "keywarden"

// ErrTooLarge is returned by Update when the transaction's keys and values
// do not fit in one etcd request.
var ErrTooLarge = errors.New("etcdstore: transaction larger than etcd's request limit")

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = store.ErrClosed

var _ store.Backend = (*Store)(nil)

// maxAttempts bounds how often Update re-runs fn after conflicts.
const maxAttempts = 64

// Options configure [Open].
type Options struct {
	// TxTimeout bounds one View, or one attempt of an Update, when the
	// caller's context has no earlier deadline; zero is 10 s. (The
	// store's group commit calls Update without a deadline: a member
	// that has lost its quorum must fail the batch, not hold it.) An
	// Update that times out after sending its commit may still have
	// committed: the function is idempotent, the caller retries.
	TxTimeout time.Duration
	// Endpoints are the etcd client URLs (https://host:2379, or http:// to
	// a loopback address).
	Endpoints []string
	// Prefix is the key prefix (no trailing '/'); empty means "keywarden".
	// Two appliance clusters sharing one etcd use different prefixes.
	Prefix string
	// TLS is the client's TLS configuration (CA, client certificate);
	// nil for plain http.
	TLS *tls.Config
	// DialTimeout bounds Open's connection and first read; zero is 5 s.
	DialTimeout time.Duration
	// MaxRequestBytes is the server's --max-request-bytes; zero is etcd's
	// default, 1.5 MiB.
	MaxRequestBytes int
	// MaxTxnOps is the server's --max-txn-ops; zero is etcd's default,
	// 128. A transaction's guard compares each key it read while they fit
	// in this many compares (beyond, the fence: see the package comment).
	MaxTxnOps int
	// Logger is the etcd client's logger; nil logs nothing.
	Logger *zap.Logger
	// DialOptions are added to the etcd client's gRPC dial options (an
	// interceptor that counts requests, in tests).
	DialOptions []grpc.DialOption
}

// Store is a store backend over etcd. Its methods are safe for concurrent use.
type Store struct {
	cli       *clientv3.Client
	prefix    string // "<prefix>/"
	fence     string
	maxReq    int
	maxOps    int
	txTimeout time.Duration
	closed    atomic.Bool
	mu        sync.RWMutex // held for reading by transactions, for writing by Close
	buckets   sync.Map     // bucket name → struct{}: seen committed (buckets are never removed)

	conflicts   atomic.Uint64
	updating    atomic.Int32 // Updates in progress
	unavailable atomic.Uint64
	observer    atomic.Pointer[Observer]

	eph *Ephemeral

	cache     *readCache // readcache.go
	stopWatch context.CancelFunc
	watching  sync.WaitGroup
}

// Open connects to etcd and checks that a linearizable read succeeds
// within DialTimeout (so a wrong endpoint or a cluster without quorum is
// an error at start, not a hang later).
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcdstore: no endpoints")
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("etcdstore: prefix %q must not end with '/'", prefix)
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.MaxRequestBytes == 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = minTxnOps
	}
	if opts.TxTimeout == 0 {
		opts.TxTimeout = 10 * time.Second
	}
	lg := opts.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		TLS:         opts.TLS,
		DialTimeout: opts.DialTimeout,
		Logger:      lg,
		// A request a little larger than the server allows must reach it
		// to be refused with a clear error, not be cut by the client.
		MaxCallSendMsgSize: opts.MaxRequestBytes + 64*1024,
		RejectOldCluster:   true,
		DialOptions:        opts.DialOptions,
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	s := &Store{cli: cli, prefix: prefix + "/", fence: prefix + "/.txn", maxReq: opts.MaxRequestBytes, maxOps: opts.MaxTxnOps, txTimeout: opts.TxTimeout}
	s.eph = newEphemeral(s)
	cctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	resp, err := cli.Get(cctx, s.prefix+".restoring")
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcdstore: first read from %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	if len(resp.Kvs) > 0 {
		cli.Close()
		return nil, fmt.Errorf("etcdstore: prefix %q holds an interrupted restore; delete the prefix and restore again", prefix)
	}
	s.cache = newReadCache(resp.Header.Revision)
	wctx, stop := context.WithCancel(context.Background())
	s.stopWatch = stop
	s.watching.Add(1)
	go func() { defer s.watching.Done(); s.watch(wctx, resp.Header.Revision+1) }()
	return s, nil
}

// Close waits for the transactions in progress, then closes the client.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopWatch()
	s.watching.Wait()
	return s.cli.Close()
}

// enter marks a transaction in progress (Close waits for it) and bounds
// it by TxTimeout.
func (s *Store) enter(ctx context.Context) (context.Context, func(), error) {
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.txTimeout)
	return ctx, func() { cancel(); s.mu.RUnlock() }, nil
}

// Prefix is the key prefix (without the trailing '/').
func (s *Store) Prefix() string { return strings.TrimSuffix(s.prefix, "/") }

// Client is the etcd client (for the maintenance API and health checks).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Conflicts is how many times Update re-ran a function because another
// transaction committed first.
func (s *Store) Conflicts() uint64 { return s.conflicts.Load() }

// View runs fn against the records as of one linearizable revision.
func (s *Store) View(ctx context.Context, fn func(store.BackendTx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	start := time.Now()
	defer func() { s.observe("view", start, err) }()
	tx := &Tx{s: s, ctx: ctx}
	rs := store.ReadSessionFrom(ctx)
	if rs != nil {
		tx.rev = rs.Revision() // 0: this View fixes the session's revision
	}
	err = fn(tx)
	if rs != nil && tx.rev != 0 {
		rs.Fix(tx.rev)
	}
	return err
}

// Update runs fn and commits its writes in one etcd transaction, running
// fn again when another transaction committed since fn's snapshot. It
// returns after the transaction committed (etcd acknowledges a write once
// a quorum has it in its log), or with fn's error and nothing written.
func (s *Store) Update(ctx context.Context, fn func(store.BackendTx) error) (err error) {
	start := time.Now()
	defer func() { s.observe("update", start, err) }()
	// The read cache serves the node's writer (the store's group commit:
	// one Update at a time). Updates of one process that run side by side
	// contend for the same keys, where a shortcut for some would starve
	// the others: they read from etcd.
	useCache := s.updating.Add(1) == 1
	defer s.updating.Add(-1)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, fellBack, refreshed, err := s.attempt(ctx, fn, attempt == 0, useCache)
		if fellBack {
			useCache = false // the fence cannot vouch for cached reads
		}
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		s.conflicts.Add(1)
		if attempt+1 >= maxAttempts {
			return fmt.Errorf("etcdstore: transaction conflicted %d times in a row; giving up", maxAttempts)
		}
		// A short random pause spreads nodes that keep colliding. An
		// attempt whose failed guard brought back the current values
		// (refreshOps) goes again at once: a pause would only let the
		// values age and first attempts overtake it, again and again.
		d := time.Duration(rand.IntN(1+min(attempt, 10))) * time.Millisecond
		if d > 0 && !refreshed {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// attempt runs fn once and tries to commit; false: a conflict. fellBack:
// the guard had to compare the fence while fn had read from the cache
// (the next attempt must not use it).
func (s *Store) attempt(ctx context.Context, fn func(store.BackendTx) error, first, useCache bool) (ok, fellBack, refreshed bool, err error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return false, false, false, err
	}
	defer leave()
	tx := &Tx{s: s, ctx: ctx, writable: true, writes: map[string][]byte{}, stale: first, useCache: useCache}
	defer func() { fellBack, refreshed = tx.fellBack, tx.refreshed && useCache }()
	if err := fn(tx); err != nil {
		if (tx.stale || tx.cached) && tx.read() {
			// fn's refusal may rest on a snapshot that was behind: it
			// stands only if what fn read is still current. When that
			// cannot be confirmed (no quorum), the caller gets the store's
			// error, not a refusal made from what this member last knew.
			ok, verr := tx.validate()
			if verr != nil {
				return false, false, false, verr
			}
			if !ok {
				return false, false, false, nil
			}
		}
		return false, false, false, err
	}
	ok, err = tx.commit()
	if ok {
		for b := range tx.created {
			s.buckets.Store(b, struct{}{})
		}
	}
	return ok, false, false, err
}

// Tx is one transaction: reads at one revision; in Update, writes are
// buffered and visible to later reads of the same Tx.
type Tx struct {
	s        *Store
	ctx      context.Context
	writable bool

	rev       int64            // the snapshot revision, 0 before the first read
	fenceMod  int64            // the fence's mod revision at rev (0: absent)
	reads     map[string]int64 // Update: key read → its mod revision at rev (0: absent)
	ranges    [][2]string      // Update: ranges read, [start, end)
	stale     bool             // Update: rev was read serializably, maybe behind (every outcome is validated)
	useCache  bool             // Update: single keys may be read from the read cache (readcache.go)
	cached    bool             // Update: some key was read from the read cache
	fellBack  bool             // Update: the guard compared the fence with cached reads (a conflict)
	refreshed bool             // Update: a failed guard brought back the current values of the keys read

	writes  map[string][]byte // full etcd key → value; nil value: deleted
	created map[store.Bucket]bool
}

// begin fixes the snapshot revision with one linearizable read.
func (tx *Tx) begin() error {
	if tx.rev != 0 {
		return nil
	}
	var opts []clientv3.OpOption
	if tx.stale {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := tx.s.cli.Get(tx.ctx, tx.s.fence, opts...)
	if err != nil {
		return tx.s.wrap(err)
	}
	tx.rev = resp.Header.Revision
	if len(resp.Kvs) == 1 {
		tx.fenceMod = resp.Kvs[0].ModRevision
	}
	return nil
}

// read reports whether fn read anything (its outcome rests on a guard).
func (tx *Tx) read() bool { return tx.rev != 0 || len(tx.reads) > 0 }

// get reads at the snapshot revision: serializable on the member the
// client reaches, linearizable when that member is behind. A View's first
// read is itself the linearizable read that fixes the revision (the
// revision of its response), so a View of one key is one round trip. An
// Update's first attempt reads a single key from the read cache when it
// holds it (readcache.go).
func (tx *Tx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	point := len(opts) == 0 // ForEach passes a range and marks the transaction
	if tx.rev == 0 && !tx.writable {
		resp, err := tx.s.cli.Get(tx.ctx, key, opts...)
		if err != nil {
			return nil, tx.s.wrap(err)
		}
		tx.rev = resp.Header.Revision
		if point {
			tx.s.remember(key, resp, tx.rev)
		}
		return resp, nil
	}
	if tx.writable && tx.useCache && point {
		if e, ok := tx.s.cache.get(key); ok {
			if tx.reads == nil {
				tx.reads = map[string]int64{}
			}
			tx.reads[key] = e.mod
			tx.cached = true
			resp := &clientv3.GetResponse{}
			if e.mod != 0 {
				resp.Kvs = []*mvccpb.KeyValue{{Key: []byte(key), Value: bytes.Clone(e.v), ModRevision: e.mod}}
				resp.Count = 1
			}
			return resp, nil
		}
	}
	if err := tx.begin(); err != nil {
		return nil, err
	}
	opts = append(opts, clientv3.WithRev(tx.rev))
	resp, err := tx.s.cli.Get(tx.ctx, key, append(opts, clientv3.WithSerializable())...)
	if errors.Is(err, rpctypes.ErrFutureRev) {
		resp, err = tx.s.cli.Get(tx.ctx, key, opts...)
	}
	if err != nil {
		return nil, tx.s.wrap(err)
	}
	if point {
		tx.s.remember(key, resp, tx.rev) // read at tx.rev (the header says the member's latest)
	}
	if tx.writable && point {
		if tx.reads == nil {
			tx.reads = map[string]int64{}
		}
		var mod int64 // absent: etcd compares a missing key's revisions as 0
		if len(resp.Kvs) == 1 {
			mod = resp.Kvs[0].ModRevision
		}
		tx.reads[key] = mod
	}
	return resp, nil
}

// remember puts a point read's result at revision at into the read cache.
func (s *Store) remember(key string, resp *clientv3.GetResponse, at int64) {
	e := cached{at: at}
	if len(resp.Kvs) == 1 {
		e.v, e.mod = bytes.Clone(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
	}
	s.cache.put(key, e, true)
}

// wrap names the backend in err and classifies it: an error that says the
// cluster cannot answer now (no leader, no quorum, no reachable member, a
// deadline passed) wraps store.ErrUnavailable. A canceled context (the
// caller went away) does not.
func (s *Store) wrap(err error) error {
	if unavailable(err) {
		return fmt.Errorf("etcdstore: %w: %w", store.ErrUnavailable, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcdstore: %w", err)
	}
	if errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("etcdstore: the revision read was compacted during the transaction: %w", err)
	}
	return fmt.Errorf("etcdstore: %w", err)
}

func (tx *Tx) key(b store.Bucket, key []byte) (string, error) {
	if err := tx.bucket(b); err != nil {
		return "", err
	}
	if len(key) == 0 {
		return "", errors.New("etcdstore: empty key")
	}
	return tx.s.prefix + string(b) + "/" + string(key), nil
}

func checkBucketName(b store.Bucket) error {
	if b == "" {
		return errors.New("etcdstore: empty bucket name")
	}
	for _, c := range []byte(b) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("etcdstore: invalid bucket name %q (lower-case letters, digits and '_')", b)
		}
	}
	return nil
}

// bucket checks that b exists: created in this transaction, seen
// committed before, or recorded at the snapshot revision.
func (tx *Tx) bucket(b store.Bucket) error {
	if err := checkBucketName(b); err != nil {
		return err
	}
	if tx.created[b] {
		return nil
	}
	if _, ok := tx.s.buckets.Load(b); ok {
		return nil
	}
	resp, err := tx.get(tx.s.prefix + ".buckets/" + string(b))
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("etcdstore: unknown bucket %q", b)
	}
	tx.s.buckets.Store(b, struct{}{})
	return nil
}

// CreateBucket records that bucket b exists (idempotent).
func (tx *Tx) CreateBucket(b store.Bucket) error {
	if !tx.writable {
		return errors.New("etcdstore: CreateBucket in a read-only transaction")
	}
	if err := checkBucketName(b); err != nil {
		return err
	}
	if tx.created == nil {
		tx.created = map[store.Bucket]bool{}
	}
	tx.created[b] = true
	tx.writes[tx.s.prefix+".buckets/"+string(b)] = []byte{}
	return nil
}

// SchemaVersion is the stored schema version (0: none).
func (tx *Tx) SchemaVersion() (uint64, error) {
	k := tx.s.prefix + ".schema"
	v, ok := tx.writes[k]
	if !ok {
		resp, err := tx.get(k)
		if err != nil {
			return 0, err
		}
		if len(resp.Kvs) == 0 {
			return 0, nil
		}
		v = resp.Kvs[0].Value
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("etcdstore: schema version of %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetSchemaVersion records the schema version.
func (tx *Tx) SetSchemaVersion(v uint64) error {
	if !tx.writable {
		return errors.New("etcdstore: SetSchemaVersion in a read-only transaction")
	}
	tx.writes[tx.s.prefix+".schema"] = binary.BigEndian.AppendUint64(nil, v)
	return nil
}

// Get returns a copy of the value at key, or store.ErrNotFound.
func (tx *Tx) Get(b store.Bucket, key []byte) ([]byte, error) {
	k, err := tx.key(b, key)
	if err != nil {
		return nil, err
	}
	if v, ok := tx.writes[k]; ok {
		if v == nil {
			return nil, store.ErrNotFound
		}
		return bytes.Clone(v), nil
	}
	resp, err := tx.get(k)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, store.ErrNotFound
	}
	return resp.Kvs[0].Value, nil
}

// Put sets key to value.
func (tx *Tx) Put(b store.Bucket, key, value []byte) error {
	if !tx.writable {
		return errors.New("etcdstore: Put in a read-only transaction")
	}
	k, err := tx.key(b, key)
	if err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	tx.writes[k] = bytes.Clone(value)
	return nil
}

// Delete removes key; a missing key is not an error.
func (tx *Tx) Delete(b store.Bucket, key []byte) error {
	if !tx.writable {
		return errors.New("etcdstore: Delete in a read-only transaction")
	}
	k, err := tx.key(b, key)
	if err != nil {
		return err
	}
	tx.writes[k] = nil
	return nil
}

// page is how many records one range read returns.
const page = 512

// ForEach calls fn for each key with the given prefix, in byte order,
// with the transaction's own writes applied. k and v are valid only
// inside fn.
func (tx *Tx) ForEach(b store.Bucket, prefix []byte, fn func(k, v []byte) error) error {
	if err := tx.bucket(b); err != nil {
		return err
	}
	base := tx.s.prefix + string(b) + "/"
	start := base + string(prefix)
	return tx.forEachRange(base, start, clientv3.GetPrefixRangeEnd(start), fn)
}

// ForEachFrom calls fn for each key of b at or after from, in byte order,
// with the transaction's own writes applied (the rollback ledger's range
// scans, store.Tx.ForEachCoveredFrom).
func (tx *Tx) ForEachFrom(b store.Bucket, from []byte, fn func(k, v []byte) error) error {
	if err := tx.bucket(b); err != nil {
		return err
	}
	base := tx.s.prefix + string(b) + "/"
	return tx.forEachRange(base, base+string(from), clientv3.GetPrefixRangeEnd(base), fn)
}

// forEachRange calls fn for each key in [start, end) of the bucket whose
// keys begin with base.
func (tx *Tx) forEachRange(base, start, end string, fn func(k, v []byte) error) error {

	// This transaction's writes in the range, in key order.
	var mine []string
	for k := range tx.writes {
		if k >= start && k < end {
			mine = append(mine, k)
		}
	}
	sort.Strings(mine)

	emit := func(k string, v []byte) error { return fn([]byte(k[len(base):]), v) }
	if tx.writable {
		if tx.reads == nil {
			tx.reads = map[string]int64{}
		}
		// The guard compares every key found in the range (a change or a
		// deletion moves its mod revision) and the range itself (a key
		// created or rewritten in it has a mod revision past rev).
		tx.ranges = append(tx.ranges, [2]string{start, end})
	}
	from := start
	for {
		resp, err := tx.get(from, clientv3.WithRange(end), clientv3.WithLimit(page))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if tx.writable {
				tx.reads[k] = kv.ModRevision
			}
			for len(mine) > 0 && mine[0] < k {
				if v := tx.writes[mine[0]]; v != nil {
					if err := emit(mine[0], v); err != nil {
						return err
					}
				}
				mine = mine[1:]
			}
			if len(mine) > 0 && mine[0] == k {
				v := tx.writes[k]
				mine = mine[1:]
				if v == nil {
					continue
				}
				if err := emit(k, v); err != nil {
					return err
				}
				continue
			}
			if err := emit(k, kv.Value); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	for _, k := range mine {
		if v := tx.writes[k]; v != nil {
			if err := emit(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// commit sends the buffered writes as one guarded transaction. It reports
// false when the fence moved (another transaction committed since the
// snapshot): nothing was written and fn must run again.
func (tx *Tx) commit() (bool, error) {
	if len(tx.writes) == 0 {
		if (tx.stale || tx.cached) && tx.read() {
			return tx.validate() // what fn read (and returned) must be current
		}
		return true, nil
	}
	keys := make([]string, 0, len(tx.writes))
	size := len(tx.s.fence) + 16
	for k, v := range tx.writes {
		keys = append(keys, k)
		size += len(k) + len(v) + 16 // per-op protobuf framing, generously
	}
	if size > tx.s.maxReq {
		return false, fmt.Errorf("%w: %d bytes in %d writes, the server accepts %d (etcd --max-request-bytes)", ErrTooLarge, size, len(keys), tx.s.maxReq)
	}
	sort.Strings(keys)
	ops := make([]clientv3.Op, 0, len(keys)+1)
	for _, k := range keys {
		if v := tx.writes[k]; v != nil {
			ops = append(ops, clientv3.OpPut(k, string(v)))
		} else {
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	ops = append(ops, clientv3.OpPut(tx.s.fence, ""))
	t := tx.s.cli.Txn(tx.ctx)
	var refresh []string
	var elseOps []clientv3.Op
	if tx.read() { // else fn read nothing: blind writes
		cmps, ok, perKey, left := tx.guard(len(ops), tx.s.maxReq-size)
		if !ok {
			tx.fellBack = true
			return false, nil // run again without the cache
		}
		t = t.If(cmps...)
		if perKey {
			refresh, elseOps = tx.refreshOps(left)
		}
	}
	resp, err := t.Then(ops...).Else(elseOps...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrTooManyOps) {
			return false, fmt.Errorf("etcdstore: %d writes in one transaction exceed the server's --max-txn-ops: %w", len(ops), err)
		}
		if errors.Is(err, rpctypes.ErrRequestTooLarge) {
			return false, fmt.Errorf("%w: %d bytes (%v)", ErrTooLarge, size, err)
		}
		return false, tx.s.wrap(err)
	}
	if resp.Succeeded {
		rev := resp.Header.Revision // every write of one transaction has its revision
		for k, v := range tx.writes {
			if v != nil {
				tx.s.cache.put(k, cached{v: v, mod: rev, at: rev}, true)
			} else {
				tx.s.cache.put(k, cached{at: rev}, true)
			}
		}
	} else {
		tx.failed(refresh, resp)
	}
	return resp.Succeeded, nil
}

// failed handles a guard that failed at the leader: the Else branch's
// reads (refreshOps, for the keys named in refresh) go into the read
// cache; when there were none (no room left in the request), the keys fn
// read are dropped from the cache instead, since a cached value among
// them may be what failed the guard and nothing else would correct it:
// the next attempt reads them from etcd.
func (tx *Tx) failed(refresh []string, resp *clientv3.TxnResponse) {
	tx.refresh(refresh, resp)
	if tx.refreshed {
		return
	}
	keys := make([]string, 0, len(tx.reads))
	for k := range tx.reads {
		keys = append(keys, k)
	}
	tx.s.cache.drop(keys)
}

// refreshOps are the Else branch of a guarded transaction: a read of every
// single key the guard compares (when their names fit in room bytes), so
// that a transaction whose guard fails brings back their current values
// for the read cache, and fn's next attempt runs on them without a round
// trip of its own (a retry costs what a first attempt costs: one request).
func (tx *Tx) refreshOps(room int) ([]string, []clientv3.Op) {
	keys := make([]string, 0, len(tx.reads))
	for k := range tx.reads {
		if room -= len(k) + 16; room < 0 {
			return nil, nil
		}
		keys = append(keys, k)
	}
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k)
	}
	return keys, ops
}

// refresh puts the Else branch's reads (refreshOps) into the read cache.
func (tx *Tx) refresh(keys []string, resp *clientv3.TxnResponse) {
	if resp == nil || resp.Header == nil {
		return
	}
	for i, r := range resp.Responses {
		rr := r.GetResponseRange()
		if rr == nil || i >= len(keys) {
			return
		}
		tx.s.remember(keys[i], &clientv3.GetResponse{Kvs: rr.Kvs}, resp.Header.Revision)
		tx.refreshed = true
	}
}

// minTxnOps is etcd's default --max-txn-ops: a guard of up to this many
// compares fits any server.
const minTxnOps = 128

// guard is the condition under which what fn read is still current: every
// key read (alone or in a range) has the mod revision it had at rev (0:
// still absent; a key deleted since no longer has it), and no key of a
// range read has a mod revision past rev (none was created or rewritten
// in it). With more compares than a transaction of nops operations may
// hold (the server's --max-txn-ops), or more than room bytes of keys, the
// guard is that the fence has not moved since rev — which vouches only
// for reads at rev: with a key read from the read cache, ok is false (the
// caller runs fn again without the cache).
// perKey: the guard compares the keys (not the fence); left: room left.
func (tx *Tx) guard(nops, room int) (cmps []clientv3.Cmp, ok, perKey bool, left int) {
	fence := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(tx.s.fence), "=", tx.fenceMod)}
	if len(tx.reads)+len(tx.ranges) > max(nops, tx.s.maxOps) {
		return fence, !tx.cached, false, room
	}
	cmps = make([]clientv3.Cmp, 0, len(tx.reads)+len(tx.ranges))
	for k, mod := range tx.reads {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", mod))
		room -= len(k) + 16
	}
	for _, r := range tx.ranges {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r[0]), "<", tx.rev+1).WithRange(r[1]))
		room -= len(r[0]) + len(r[1]) + 24
	}
	if room < 0 {
		return fence, !tx.cached, false, room
	}
	return cmps, true, true, room
}

// validate reports whether what fn read is still current, in a read-only
// transaction that is linearizable (its fence read is not serializable,
// so the member confirms with the leader first; a transaction of compares
// alone would be answered locally).
func (tx *Tx) validate() (bool, error) {
	cmps, ok, perKey, left := tx.guard(0, tx.s.maxReq)
	if !ok {
		tx.fellBack = true
		return false, nil
	}
	var refresh []string
	var elseOps []clientv3.Op
	if perKey {
		refresh, elseOps = tx.refreshOps(left)
	}
	resp, err := tx.s.cli.Txn(tx.ctx).If(cmps...).Then(clientv3.OpGet(tx.s.fence, clientv3.WithKeysOnly())).Else(elseOps...).Commit()
	if err != nil {
		return false, tx.s.wrap(err)
	}
	if !resp.Succeeded {
		tx.failed(refresh, resp)
	}
	return resp.Succeeded, nil
}

// unavailable reports whether err means etcd cannot serve the request now:
// a deadline passed, or a gRPC status Unavailable or DeadlineExceeded
// (etcd's "request timed out", "no leader", "leader changed" are
// Unavailable).
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}
