package main

// The offline commands on store.backend embedded. The node's store is its
// own etcd member, which only a running appliance starts (the member needs
// the unsealed root key for its certificates, and its quorum for any
// write), so a command that needs the cluster's store cannot run with the
// server stopped. What `reseal` and `vault csr` change is node-local — the
// root key sealed to this TPM, and the TPM keys' blobs — and lives in
// data.dir/node/state.json, so they run on a stopped node as on bbolt.
// `recover` and `rollback accept` need the cluster's store: they refuse
// and name what to do instead.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"

	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
)

// errRecoverEmbedded: recover restores a backup into one store; an
// embedded cluster's store is its members, which recover cannot make.
var errRecoverEmbedded = errors.New("recover: store.backend is embedded: a cluster's node does not need `keywarden recover` — " +
	"a node that lost its TPM, its data.dir/node/state.json or its disk rejoins instead: on a running member `keywarden cluster remove NAME`, " +
	"then on this node remove data.dir/etcd and data.dir/node and run `keywarden cluster join URL` (the cluster sends the root key to this TPM). " +
	"If every node is lost, recover the latest `keywarden backup` dump with the recovery shares into store.backend: bbolt (or an external etcd); " +
	"an embedded cluster cannot be rebuilt from a backup yet")

// errRollbackAcceptEmbedded: the rollback check reads the cluster's store,
// which only running members serve.
var errRollbackAcceptEmbedded = errors.New("rollback accept: store.backend is embedded: the store is the cluster's etcd members, which only running appliances serve, " +
	"so the offline accept cannot read it. Start every node at once with `keywarden serve -accept-rollback` (audited on each node; the members need their quorum " +
	"before any node's check runs), then restart them without the flag")

// lockStoppedNode refuses while this node's appliance runs, and keeps it
// from starting until release is called: a running etcd member holds a
// lock on its newest write-ahead log file (etcd's own file lock), taken
// here the same way. A node whose member never ran (no log yet) has
// nothing to lock.
func lockStoppedNode(cfg config.Config) (release func(), err error) {
	wals, err := filepath.Glob(filepath.Join(cluster.EtcdDir(cfg.Data.Dir), "member", "wal", "*.wal"))
	if err != nil || len(wals) == 0 {
		return func() {}, nil
	}
	slices.Sort(wals)
	l, err := fileutil.TryLockFile(wals[len(wals)-1], os.O_RDWR, fileutil.PrivateFileMode)
	if errors.Is(err, fileutil.ErrLocked) {
		return nil, fmt.Errorf("this node's etcd member is running (%s is locked): stop the server first", cluster.EtcdDir(cfg.Data.Dir))
	}
	if err != nil {
		return nil, fmt.Errorf("check that the server is stopped: %w", err)
	}
	return func() { _ = l.Close() }, nil
}

// loadStoppedNode reads the node-local state of a stopped node (see
// lockStoppedNode; release it when done).
func loadStoppedNode(cfg config.Config) (*cluster.State, func(), error) {
	st, err := cluster.LoadState(cfg.Data.Dir)
	if err != nil {
		return nil, nil, err
	}
	release, err := lockStoppedNode(cfg)
	if err != nil {
		return nil, nil, err
	}
	return st, release, nil
}

// resealNode is reseal on the embedded backend: the root key sealed to
// this TPM in the node-local state is unsealed and sealed again to pcrs,
// the new blob is checked to unseal to the same key, and only then is the
// state written (atomically). Only this node changes: every member seals
// the root key to its own TPM and PCRs, so run it on each node whose boot
// state will change.
func resealNode(ctx context.Context, cfg config.Config, pcrs []int) error {
	st, release, err := loadStoppedNode(cfg)
	if err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	defer release()
	old, err := st.Sealed()
	if err != nil {
		return fmt.Errorf("reseal: node-local state: %w", err)
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reseal: open TPM %s: %w", cfg.TPM.Path, err)
	}
	defer tpm.Close()
	key, err := enclave.UnsealRoot(ctx, tpm, old)
	if err != nil {
		return fmt.Errorf("reseal: the root key in %s does not unseal on this TPM: %w", cluster.StatePath(cfg.Data.Dir), err)
	}
	defer key.Wipe()
	sealed, err := enclave.SealRoot(ctx, tpm, key, pcrs)
	if err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	back, err := enclave.UnsealRoot(ctx, tpm, sealed)
	if err != nil {
		return fmt.Errorf("reseal: the resealed root key does not unseal (nothing was changed): %w", err)
	}
	same := back.Equal(key)
	back.Wipe()
	if !same {
		return errors.New("reseal: the resealed root key unseals to other bytes (nothing was changed)")
	}
	b, err := sealed.Marshal()
	if err != nil {
		return err
	}
	root, err := enclave.NewRoot(key)
	if err != nil {
		return err
	}
	defer root.Close()
	st.SealedRoot = b
	if err := st.Save(cfg.Data.Dir); err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	if err := operatorAudit(ctx, cfg, root, audit.Event{Action: actionReseal, Outcome: audit.OutcomeSuccess,
		Fields: map[string]string{"from_pcrs": fmt.Sprint(old.PCRs), "to_pcrs": fmt.Sprint(sealed.PCRs), "node": st.Name}}); err != nil {
		return fmt.Errorf("reseal: %w", err)
	}
	fmt.Fprintf(os.Stderr, "reseal: root key of node %s sealed to PCRs %v (was %v) and checked, in %s; the other nodes are unchanged\n", st.Name, sealed.PCRs, old.PCRs, cluster.StatePath(cfg.Data.Dir))
	warnNoPCRPolicy(cfg, pcrs)
	return nil
}
