package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/keywarden/keywarden/store"
)

// EndpointStatus is what one endpoint's member says of itself (etcd's
// Maintenance Status).
type EndpointStatus struct {
	Endpoint string
	Err      error  // the endpoint did not answer
	MemberID uint64 // the member behind the endpoint
	Leader   uint64 // the leader it knows (0: none)
	RaftTerm uint64
}

// ClusterStatus is the cluster as the endpoints this store talks to see it.
type ClusterStatus struct {
	Endpoints []EndpointStatus
	// Leader is the leader a reachable endpoint reports (the one of the
	// highest Raft term), 0 when none does.
	Leader uint64
	// Members is the cluster's member count (MemberList), 0 when it did
	// not answer (no leader, or the request went to a member that just
	// stopped).
	Members int
}

// Reachable is how many endpoints answered.
func (c ClusterStatus) Reachable() int {
	n := 0
	for _, e := range c.Endpoints {
		if e.Err == nil {
			n++
		}
	}
	return n
}

// ClusterStatus asks every endpoint for its status (each bounded by ctx)
// and the cluster for its member list. It fails only when no endpoint
// answers.
func (s *Store) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	var cs ClusterStatus
	eps := s.cli.Endpoints()
	cs.Endpoints = make([]EndpointStatus, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() { // concurrently: a dead endpoint must not eat the others' time
			defer wg.Done()
			es := EndpointStatus{Endpoint: ep}
			resp, err := s.cli.Status(ctx, ep)
			if err != nil {
				es.Err = s.wrap(err)
			} else {
				es.MemberID, es.Leader, es.RaftTerm = resp.Header.MemberId, resp.Leader, resp.RaftTerm
			}
			cs.Endpoints[i] = es
		}()
	}
	wg.Wait()
	var term uint64
	for _, es := range cs.Endpoints {
		if es.Err == nil && es.Leader != 0 && es.RaftTerm >= term {
			cs.Leader, term = es.Leader, es.RaftTerm
		}
	}
	if cs.Reachable() == 0 {
		return cs, fmt.Errorf("etcdstore: no endpoint answered its status: %w", store.ErrUnavailable)
	}
	// Without a leader the member list (a linearizable request) cannot
	// answer; ask only when there is one.
	if cs.Leader != 0 {
		if ml, err := s.cli.MemberList(ctx); err == nil {
			cs.Members = len(ml.Members)
		}
	}
	return cs, nil
}

// MaintenanceSnapshot streams etcd's own snapshot of the member behind the
// first endpoint that answers (clientv3 Maintenance.Snapshot): the whole
// database of that member (every prefix, the membership, the revision
// history), the file `etcdutl snapshot restore` takes. Errors from the
// member come up as read errors. Close the reader.
func (s *Store) MaintenanceSnapshot(ctx context.Context) (io.ReadCloser, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rc, err := s.cli.Snapshot(ctx)
	if err != nil {
		return nil, s.wrap(err)
	}
	return rc, nil
}

// Observer is told of each View and each Update of a Store (all its
// attempts together), for metrics: op is "view" or "update", d how long
// it took, err its result. It must be cheap and safe for concurrent use.
type Observer func(op string, d time.Duration, err error)

// SetObserver installs o (nil removes it).
func (s *Store) SetObserver(o Observer) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&o)
}

func (s *Store) observe(op string, start time.Time, err error) {
	if err != nil && errors.Is(err, store.ErrUnavailable) {
		s.unavailable.Add(1)
	}
	if o := s.observer.Load(); o != nil {
		(*o)(op, time.Since(start), err)
	}
}

// Unavailable is how many Views and Updates failed because the cluster
// could not answer (no leader, no quorum, no reachable member, a deadline).
func (s *Store) Unavailable() uint64 { return s.unavailable.Load() }
