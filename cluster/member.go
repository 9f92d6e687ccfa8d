package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// MaxTxnOps is the member's --max-txn-ops: the store's group commit puts
// many callers' writes into one transaction (etcd's default, 128, is too
// small; see package etcdstore).
const MaxTxnOps = 4096

// clusterToken is etcd's initial-cluster-token. Clusters are told apart
// by their CA (derived from each cluster's own root key), not by it.
const clusterToken = "keywarden"

// MemberOptions configure [StartMember].
type MemberOptions struct {
	Name           string // member name (cluster.name)
	DataDir        string // etcd's data directory (data.dir/etcd)
	TLSDir         string // where the node certificate files go (data.dir/node/tls)
	PeerListen     string // host:port
	PeerAdvertise  string // https://host:port
	ClientListen   string // host:port, loopback
	InitialCluster string // from the node-local state
	ClusterState   string // StateNew or StateExisting
	CA             *CA
	StartTimeout   time.Duration
	Logger         *slog.Logger
}

// Embedded is this node's etcd member, running in-process, with its
// client (mutual TLS with the cluster CA) and the learner promotion loop.
type Embedded struct {
	e         *embed.Etcd
	cli       *clientv3.Client
	clientURL string
	tls       *tls.Config
	log       *slog.Logger

	cancel        context.CancelFunc
	wg            sync.WaitGroup
	leaderChanges atomic.Uint64
	closeOnce     sync.Once
	logCore       *slogCore
}

var _ Member = (*Embedded)(nil)

// StartMember starts the member and waits until it is ready (it has
// joined its cluster and a leader is known) or StartTimeout passes.
func StartMember(ctx context.Context, o MemberOptions) (*Embedded, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	peer, err := url.Parse(o.PeerAdvertise)
	if err != nil || peer.Scheme != "https" {
		return nil, fmt.Errorf("cluster: peer URL %q must be https://host:port", o.PeerAdvertise)
	}
	clientHost, _, err := net.SplitHostPort(o.ClientListen)
	if err != nil {
		return nil, fmt.Errorf("cluster: client listen %q: %w", o.ClientListen, err)
	}
	hosts := []string{peer.Hostname()}
	if clientHost != peer.Hostname() {
		hosts = append(hosts, clientHost)
	}
	node, err := o.CA.Issue(o.Name, hosts, time.Now())
	if err != nil {
		return nil, err
	}
	files, err := WriteFiles(o.TLSDir, o.CA, node)
	if err != nil {
		return nil, fmt.Errorf("cluster: node certificate files: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.DataDir
	peerListen := url.URL{Scheme: "https", Host: o.PeerListen}
	client := url.URL{Scheme: "https", Host: o.ClientListen}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerListen}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	// The client port serves gRPC only, by gRPC's own server: etcd's HTTP
	// endpoints (health, metrics, the JSON gateway), which on one port put
	// every gRPC request through Go's HTTP/2 server and gRPC's ServeHTTP
	// (a large part of a member's CPU per request), get a port of their
	// own on loopback (same TLS and client certificates; the appliance
	// does not use them).
	cfg.ListenClientHttpUrls = []url.URL{{Scheme: "https", Host: "127.0.0.1:0"}}
	cfg.InitialCluster = o.InitialCluster
	cfg.ClusterState = o.ClusterState
	cfg.InitialClusterToken = clusterToken
	cfg.MaxTxnOps = MaxTxnOps
	cfg.StrictReconfigCheck = true // refuse a member change that would lose quorum
	// History older than an hour is compacted: the store reads at one
	// revision for at most a transaction's timeout.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	cfg.PeerTLSInfo.CertFile, cfg.PeerTLSInfo.KeyFile, cfg.PeerTLSInfo.TrustedCAFile = files.Cert, files.Key, files.CA
	cfg.PeerTLSInfo.ClientCertAuth = true
	// A peer is admitted by its certificate from the cluster CA (only a
	// holder of the root key can make one), not by the address it calls
	// from (NAT, several interfaces).
	cfg.PeerTLSInfo.SkipClientSANVerify = true
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile, cfg.ClientTLSInfo.TrustedCAFile = files.Cert, files.Key, files.CA
	cfg.ClientTLSInfo.ClientCertAuth = true
	cfg.LogLevel = "warn"
	core := newSlogCore(o.Logger.With("component", "etcd"))
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: start the embedded etcd member %q: %w", o.Name, err)
	}
	timer := time.NewTimer(o.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("cluster: embedded etcd member %q failed while starting: %w", o.Name, err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("cluster: the embedded etcd member %q was not ready within %s (cluster.start_timeout): its peers (%s) must be reachable on their peer ports and a majority of the members must be up",
			o.Name, o.StartTimeout, o.InitialCluster)
	}
	m := &Embedded{e: e, clientURL: client.String(), tls: o.CA.ClientTLS(node), log: o.Logger, logCore: core}
	m.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{m.clientURL}, TLS: m.tls, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("cluster: client of the embedded member: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.promoteLoop(lctx) }()
	go func() { defer m.wg.Done(); m.watchLeader(lctx) }()
	return m, nil
}

// IsLearner says whether this member is still a learner (a joined node
// before the promotion loop made it a voter).
func (m *Embedded) IsLearner() bool { return m.e.Server.IsLearner() }

// WaitVoter waits until this member is a voter: a learner serves no
// linearizable read and no write, so the store cannot open on it. The
// leader's promotion loop promotes it once it has caught up.
func (m *Embedded) WaitVoter(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for m.e.Server.IsLearner() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.e.Err():
			return errors.New("cluster: the embedded etcd member stopped while waiting to be promoted")
		case <-t.C:
			return fmt.Errorf("cluster: this member is still a learner after %s (cluster.start_timeout): the leader promotes it once it has caught up; check that the leader reaches this node's peer URL", timeout)
		case <-tick.C:
		}
	}
	return nil
}

// ClientURL is the member's client URL (https, loopback), for this node's
// store client.
func (m *Embedded) ClientURL() string { return m.clientURL }

// ClientTLS is the TLS configuration of a client of this member.
func (m *Embedded) ClientTLS() *tls.Config { return m.tls.Clone() }

// ClusterID is the cluster's id.
func (m *Embedded) ClusterID() uint64 { return uint64(m.e.Server.Cluster().ID()) }

// MemberID is this member's id.
func (m *Embedded) MemberID() uint64 { return uint64(m.e.Server.MemberID()) }

// HasLeader says whether this member knows a leader (its cluster has a
// quorum, as far as it can tell).
func (m *Embedded) HasLeader() bool { return m.e.Server.Leader() != 0 }

// LeaderChanges counts the leader changes this member has seen.
func (m *Embedded) LeaderChanges() uint64 { return m.leaderChanges.Load() }

// Close stops the promotion loop, the client and the member.
func (m *Embedded) Close() {
	m.closeOnce.Do(func() {
		m.cancel()
		m.wg.Wait()
		m.cli.Close()
		// etcd reports its own listeners closing as errors: not news.
		m.logCore.closing.Store(true)
		m.e.Close()
	})
}

// ID is an etcd member or cluster id; its text form is hexadecimal, as
// etcd prints it.
type ID uint64

// String is the id in hexadecimal.
func (id ID) String() string { return strconv.FormatUint(uint64(id), 16) }

// MarshalText is the hexadecimal form.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads the hexadecimal form.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}

// ParseID reads a hexadecimal id (1 to 16 digits, not zero).
func ParseID(s string) (ID, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 || len(s) > 16 {
		return 0, fmt.Errorf("cluster: %q is not a member id (hexadecimal, as status prints it)", s)
	}
	return ID(v), nil
}

// MemberInfo is one member as status shows it.
type MemberInfo struct {
	ID       ID       `json:"id"`
	Name     string   `json:"name"`
	PeerURLs []string `json:"peerURLs"`
	Learner  bool     `json:"learner"`
	Leader   bool     `json:"leader"`
	Self     bool     `json:"self"`
}

// Status is the cluster as this member sees it.
type Status struct {
	ClusterID ID           `json:"clusterId"`
	MemberID  ID           `json:"memberId"`
	Leader    ID           `json:"leader"` // 0: no leader known
	Members   []MemberInfo `json:"members"`
}

// Status lists the members (a linearizable read of the membership).
func (m *Embedded) Status(ctx context.Context) (Status, error) {
	var opts []clientv3.OpOption
	if m.e.Server.IsLearner() {
		opts = append(opts, clientv3.WithSerializable()) // a learner serves no linearizable reads
	}
	resp, err := m.cli.MemberList(ctx, opts...)
	if err != nil {
		return Status{}, fmt.Errorf("cluster: list members: %w", err)
	}
	leader := ID(m.e.Server.Leader())
	st := Status{ClusterID: ID(resp.Header.ClusterId), MemberID: ID(m.MemberID()), Leader: leader}
	for _, mm := range resp.Members {
		st.Members = append(st.Members, MemberInfo{
			ID: ID(mm.ID), Name: mm.Name, PeerURLs: mm.PeerURLs, Learner: mm.IsLearner,
			Leader: ID(mm.ID) == leader, Self: ID(mm.ID) == st.MemberID,
		})
	}
	return st, nil
}

// Errors of [Embedded.AddLearner] and [Embedded.Remove].
var (
	ErrMemberNotFound = errors.New("cluster: no such member")
	ErrNameTaken      = errors.New("cluster: a member of that name exists")
	ErrLastVoter      = errors.New("cluster: refusing to remove the last voting member (the cluster and every key in it would be gone)")
	ErrLoseQuorum     = errors.New("cluster: refusing to remove a voting member: the remaining members that are up would not make a majority (bring the others back first)")
	ErrRemoveSelf     = errors.New("cluster: refusing to remove the member serving this request; run the removal on another member")
)

// removeSettle bounds how long AddLearner and Remove retry etcd's
// "unhealthy" answer (its health interval is 5 s).
const removeSettle = 7 * time.Second

// AddLearner adds a learner (see [Member]).
func (m *Embedded) AddLearner(ctx context.Context, name string, peerURLs []string) (uint64, string, error) {
	id, initial, err := AddLearner(ctx, m.cli, name, peerURLs)
	if err == nil {
		m.log.Info("cluster: learner added", "name", name, "id", ID(id).String(), "peer_urls", peerURLs)
	}
	return id, initial, err
}

// AddLearner adds a learner named name at peerURLs through cli, a client
// of the cluster, refusing a name a member already has, and returns its
// id and the initial-cluster string it starts with.
func AddLearner(ctx context.Context, cli *clientv3.Client, name string, peerURLs []string) (uint64, string, error) {
	if name == "" || strings.ContainsAny(name, "=,/ \t\n") {
		return 0, "", fmt.Errorf("cluster: bad member name %q", name)
	}
	if len(peerURLs) == 0 {
		return 0, "", errors.New("cluster: a member needs a peer URL")
	}
	for _, p := range peerURLs {
		u, err := url.Parse(p)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return 0, "", fmt.Errorf("cluster: peer URL %q must be https://host:port (peers speak mutual TLS)", p)
		}
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("cluster: list members: %w", err)
	}
	for _, mm := range list.Members {
		if mm.Name == name {
			return 0, "", fmt.Errorf("%w: %q", ErrNameTaken, name)
		}
	}
	// Right after a member started or left etcd answers "unhealthy" until
	// the members have been connected for its health interval: retried
	// for a little longer than that.
	deadline := time.Now().Add(removeSettle)
	var resp *clientv3.MemberAddResponse
	for {
		resp, err = cli.MemberAddAsLearner(ctx, peerURLs)
		if err == nil {
			break
		}
		if !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline) {
			return 0, "", fmt.Errorf("cluster: add learner %q: %w", name, err)
		}
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, "", ctx.Err()
		case <-t.C:
		}
	}
	var parts []string
	for _, mm := range resp.Members {
		n := mm.Name
		if mm.ID == resp.Member.ID {
			n = name
		}
		if n == "" {
			continue // another member added but not started yet: it has no name to list
		}
		for _, u := range mm.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return resp.Member.ID, strings.Join(parts, ","), nil
}

// Remove removes a member by id. It refuses the member serving the
// request, the last voter, and a voter whose removal would leave fewer
// started members than the new quorum (etcd's strict reconfiguration
// check).
func (m *Embedded) Remove(ctx context.Context, id ID) (MemberInfo, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return MemberInfo{}, err
	}
	var target *MemberInfo
	voters := 0
	for i, mm := range st.Members {
		if !mm.Learner {
			voters++
		}
		if mm.ID == id {
			target = &st.Members[i]
		}
	}
	switch {
	case target == nil:
		return MemberInfo{}, ErrMemberNotFound
	case !target.Learner && voters <= 1:
		return *target, ErrLastVoter
	case target.Self:
		return *target, ErrRemoveSelf
	}
	// etcd's strict reconfiguration check answers "unhealthy" while some
	// remaining voter has not been connected to this member for its health
	// interval (5 s): right after a member started or left that clears by
	// itself, so it is retried for a little longer than that; when it
	// persists, a voter is down and the removal would break the quorum.
	deadline := time.Now().Add(removeSettle)
	for {
		_, err := m.cli.MemberRemove(ctx, uint64(id))
		switch {
		case err == nil:
			return *target, nil
		case errors.Is(err, rpctypes.ErrMemberNotEnoughStarted):
			return *target, ErrLoseQuorum
		case errors.Is(err, rpctypes.ErrMemberNotFound):
			return *target, ErrMemberNotFound
		case errors.Is(err, rpctypes.ErrUnhealthy) && time.Now().Before(deadline):
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return *target, ctx.Err()
			case <-t.C:
			}
		case errors.Is(err, rpctypes.ErrUnhealthy):
			return *target, ErrLoseQuorum
		default:
			return *target, fmt.Errorf("cluster: remove member %s: %w", id, err)
		}
	}
}

// promoteLoop makes learners voters once they have caught up: on the
// leader (only its attempt counts), MemberPromote for every learner,
// which etcd refuses until the learner's log is close to the leader's;
// retried with a backoff up to 30 s.
func (m *Embedded) promoteLoop(ctx context.Context) {
	const idle, maxWait = 2 * time.Second, 30 * time.Second
	wait := idle
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if m.e.Server.Leader() != m.e.Server.MemberID() {
			wait = idle
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		failed := m.promoteLearners(cctx)
		cancel()
		if failed {
			wait = min(wait*2, maxWait)
		} else {
			wait = idle
		}
	}
}

// promoteLearners tries each learner once; failed: some stayed learners.
func (m *Embedded) promoteLearners(ctx context.Context) (failed bool) {
	list, err := m.cli.MemberList(ctx)
	if err != nil {
		return true
	}
	for _, mm := range list.Members {
		if !mm.IsLearner {
			continue
		}
		if _, err := m.cli.MemberPromote(ctx, mm.ID); err != nil {
			failed = true
			if !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
				m.log.Warn("cluster: learner promotion failed; retrying", "name", mm.Name, "id", fmt.Sprintf("%x", mm.ID), "err", err)
			}
			continue
		}
		m.log.Info("cluster: learner promoted to voting member", "name", mm.Name, "id", fmt.Sprintf("%x", mm.ID))
	}
	return failed
}

// watchLeader counts leader changes.
func (m *Embedded) watchLeader(ctx context.Context) {
	for {
		ch := m.e.Server.LeaderChangedNotify()
		select {
		case <-ctx.Done():
			return
		case <-m.e.Server.StopNotify():
			return
		case <-ch:
			m.leaderChanges.Add(1)
		}
	}
}

// Paths of a data directory's embedded member.
func EtcdDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }

// TLSDir is where a node writes its certificate files at each start.
func TLSDir(dataDir string) string { return filepath.Join(dataDir, "node", "tls") }
