package etcdstore

import (
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// StopWatch stops s's watch of its prefix (the read cache then learns of
// other nodes' writes only from their guards failing).
func StopWatch(s *Store) {
	s.stopWatch()
	s.watching.Wait()
}

// CacheEntry is the read cache's entry for the etcd key key.
func CacheEntry(s *Store, key string) (v []byte, mod int64, ok bool) {
	e, ok := s.cache.get(key)
	return e.v, e.mod, ok
}

// Remember puts into the read cache what a point read of key at revision
// at answered (mod 0: absent), as a read whose answer arrives late would.
func Remember(s *Store, key string, v []byte, mod, at int64) {
	resp := &clientv3.GetResponse{}
	if mod != 0 {
		resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{Key: []byte(key), Value: v, ModRevision: mod})
	}
	s.remember(key, resp, at)
}

// SetCacheBytes sets the read cache's bound of bytes.
func SetCacheBytes(s *Store, n int) {
	s.cache.mu.Lock()
	s.cache.maxBytes = n
	s.cache.mu.Unlock()
}

// CacheBytes is the size of the read cache's keys and values.
func CacheBytes(s *Store) int {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	n := 0
	for k, e := range s.cache.m {
		n += len(k) + len(e.v)
	}
	return n
}
