package main

// The embedded backend (store.backend: embedded): this node runs an etcd
// member in-process (package cluster). Its start, in order: node-local
// state (data.dir/node/state.json) → unseal the root key from it with the
// TPM → the cluster CA derived from the root key → the member (peer and
// client mutual TLS with certificates of that CA) → the etcd store backend
// over the member's loopback client URL → the store façade. The rest of
// the start is serve's.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/clusterapi"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// embeddedPrefix is the key prefix of the appliance's records in its own
// embedded cluster (nothing else shares it).
const embeddedPrefix = "keywarden"

// startEmbedded opens the store of the embedded backend and unseals the
// root key from the node-local state (both at once: the member needs the
// root key's CA before the store exists). In dev mode a data directory
// without node-local state bootstraps a one-member cluster, as dev creates
// a root key on bbolt. A root key that does not unseal stops the start:
// without it the node cannot prove itself to its peers.
func (a *appliance) startEmbedded(ctx context.Context) error {
	st, err := cluster.LoadState(a.cfg.Data.Dir)
	var root *enclave.Root
	switch {
	case errors.Is(err, cluster.ErrNoState) && a.cfg.Dev:
		a.log.Warn("dev mode: creating a root key sealed to the SIMULATED TPM and a one-member embedded etcd cluster (public seed: INSECURE, for trying Keywarden out only)")
		var raw secret.Bytes
		st, root, raw, err = bootstrapNode(ctx, a.cfg, a.tpm)
		raw.Wipe()
		if err != nil {
			return err
		}
		if err := st.Save(a.cfg.Data.Dir); err != nil {
			root.Close()
			return err
		}
	case err != nil:
		return err
	}
	if err := a.checkNodePCRPolicy(st); err != nil {
		return err
	}
	if root == nil {
		root, err = st.Unseal(ctx, a.tpm)
		if err != nil {
			return fmt.Errorf("the root key in %s does not unseal on this TPM (%w); the node cannot start its cluster member without it", cluster.StatePath(a.cfg.Data.Dir), err)
		}
	}
	a.root = root
	a.closers = append(a.closers, root.Close)
	if !root.Locked() {
		a.log.Warn("could not lock the root key's memory against swap (raise LimitMEMLOCK)")
	}
	a.node = st
	if st.Name != a.cfg.Cluster.Name {
		a.log.Warn("cluster.name differs from the name this node has in its cluster; keeping the cluster's", "cluster_name", st.Name, "configured", a.cfg.Cluster.Name)
	}
	// Every member of an embedded cluster keeps its own rollback record
	// under its member name (decisions/45); rollback.node, when set,
	// must be that name.
	if a.cfg.Rollback.Node != "" && a.cfg.Rollback.Node != st.Name {
		return fmt.Errorf("rollback.node %q differs from this node's member name %q: leave rollback.node empty on store.backend embedded (the member name is used)", a.cfg.Rollback.Node, st.Name)
	}
	a.cfg.Rollback.Node = st.Name

	m, err := startNodeMember(ctx, a.cfg, st, root, a.log)
	if err != nil {
		return err
	}
	a.member = m
	a.closers = append(a.closers, m.Close)
	if m.IsLearner() {
		a.log.Info("this member is a learner: waiting until the leader promotes it (it is catching up)")
		if err := m.WaitVoter(ctx, a.cfg.Cluster.StartTimeout); err != nil {
			return err
		}
	}
	if st.MemberID != m.MemberID() || st.ClusterID != m.ClusterID() {
		st.MemberID, st.ClusterID = m.MemberID(), m.ClusterID()
		if err := st.Save(a.cfg.Data.Dir); err != nil {
			return err
		}
	}
	a.log.Info("embedded etcd member running", "name", st.Name, "member_id", cluster.ID(st.MemberID).String(), "cluster_id", cluster.ID(st.ClusterID).String(), "peer", a.cfg.Cluster.PeerAdvertise)

	db, err := openMemberStore(ctx, a.cfg, m)
	if err != nil {
		return err
	}
	a.db = db
	a.closers = append(a.closers, func() { db.Close() })
	a.metrics.GaugeFunc("keywarden_store_size_bytes", "Size of the bbolt file (0 on etcd).", func() float64 { return float64(db.Stats().Size) })
	a.metrics.CounterFunc("keywarden_store_commits_total", "Store transactions committed (one fsync each).", func() float64 { return float64(db.Stats().Commits) })
	return nil
}

// checkNodePCRPolicy is checkRootPCRPolicy for the node-local state.
func (a *appliance) checkNodePCRPolicy(st *cluster.State) error {
	if a.cfg.Dev {
		return nil
	}
	sealed, err := st.Sealed()
	if err != nil {
		return fmt.Errorf("node-local state: %w", err)
	}
	if len(sealed.PCRs) > 0 {
		return nil
	}
	if !a.cfg.TPM.AllowNoPCRPolicy {
		return errNoPCRPolicy
	}
	a.noPCRPolicy = true
	a.log.Warn("the root key is sealed without a PCR policy (tpm.allow_no_pcr_policy: true): a stolen machine unseals it whatever it boots")
	return nil
}

// bootstrapNode makes a new root key, seals it to tpm under tpm.pcrs and
// makes the node-local state of the first member of a new cluster (not
// saved yet). The caller wipes raw and closes root.
func bootstrapNode(ctx context.Context, cfg config.Config, tpm transport.TPM) (*cluster.State, *enclave.Root, secret.Bytes, error) {
	if fi, err := os.Stat(cluster.EtcdDir(cfg.Data.Dir)); err == nil && fi.IsDir() {
		if ents, _ := os.ReadDir(cluster.EtcdDir(cfg.Data.Dir)); len(ents) > 0 {
			return nil, nil, secret.Bytes{}, fmt.Errorf("%s has etcd data but there is no node-local state (%s): a previous init did not finish; remove %s to start again",
				cluster.EtcdDir(cfg.Data.Dir), cluster.StatePath(cfg.Data.Dir), cluster.EtcdDir(cfg.Data.Dir))
		}
	}
	key := enclave.NewRootKey()
	st, err := cluster.NewState(ctx, tpm, key, cfg.TPM.PCRs, cfg.Cluster.Name, cfg.Cluster.PeerAdvertise)
	if err != nil {
		key.Wipe()
		return nil, nil, secret.Bytes{}, err
	}
	root, err := enclave.NewRoot(key)
	if err != nil {
		key.Wipe()
		return nil, nil, secret.Bytes{}, err
	}
	return st, root, key, nil
}

// startNodeMember starts this node's member for st under root's CA.
func startNodeMember(ctx context.Context, cfg config.Config, st *cluster.State, root *enclave.Root, log *slog.Logger) (*cluster.Embedded, error) {
	ca, err := cluster.DeriveCA(root)
	if err != nil {
		return nil, err
	}
	c := cfg.Cluster
	return cluster.StartMember(ctx, cluster.MemberOptions{
		Name: st.Name, DataDir: cluster.EtcdDir(cfg.Data.Dir), TLSDir: cluster.TLSDir(cfg.Data.Dir),
		PeerListen: c.PeerListen, PeerAdvertise: c.PeerAdvertise, ClientListen: c.ClientListen,
		InitialCluster: st.InitialCluster, ClusterState: st.ClusterState, CA: ca,
		StartTimeout: c.StartTimeout, Logger: log,
	})
}

// openMemberStore opens the store façade over the etcd backend on the
// member's own client URL (mutual TLS with the node certificate).
func openMemberStore(ctx context.Context, cfg config.Config, m *cluster.Embedded) (*store.DB, error) {
	b, err := etcdstore.Open(ctx, etcdstore.Options{
		Endpoints: []string{m.ClientURL()}, TLS: m.ClientTLS(), Prefix: embeddedPrefix,
		DialTimeout: cfg.Etcd.DialTimeout, MaxTxnOps: cluster.MaxTxnOps,
	})
	if err != nil {
		return nil, fmt.Errorf("store (embedded etcd member %s): %w", m.ClientURL(), err)
	}
	db, err := store.New(b, store.Options{})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("store (embedded etcd): %w", err)
	}
	if err := checkSharedState(cfg.Store.Backend, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// wireCluster adds the member routes (GET /v1/admin/cluster, DELETE
// /v1/admin/cluster/members/:id) on the embedded backend.
func wireCluster(_ context.Context, a *appliance, opts *server.Options) error {
	if a.member == nil {
		return nil
	}
	h, err := clusterapi.NewMembers(retiringMember{Embedded: a.member, db: a.db, root: a.root, log: a.log}, opts.Audit, a.log)
	if err != nil {
		return err
	}
	opts.Cluster = h
	return nil
}

// retiringMember is the embedded member whose Remove also marks the
// removed node's rollback record removed (enclave.RemoveRollbackNode): its
// digest share stays in the store's digest, and no node starts again
// under that name (decisions/45).
type retiringMember struct {
	*cluster.Embedded
	db   *store.DB
	root *enclave.Root
	log  *slog.Logger
}

func (m retiringMember) Remove(ctx context.Context, id cluster.ID) (cluster.MemberInfo, error) {
	info, err := m.Embedded.Remove(ctx, id)
	if err != nil || info.Name == "" {
		return info, err
	}
	if err := enclave.RemoveRollbackNode(ctx, m.db, m.root, info.Name); err != nil {
		// The member is gone; a node that never started has no record.
		m.log.Warn("cluster member removed; its rollback record was not marked removed", "name", info.Name, "err", err)
	}
	return info, nil
}
