// Package cluster is the appliance's membership in a cluster of
// appliances on embedded etcd (store.backend: embedded): the node-local
// state (state.go), the cluster CA derived from the root key (ca.go), the
// embedded etcd member with its learner promotion (member.go), and the
// seam the attested join (package cluster/join) uses: [Member] on the
// approving side, [Joined] and [SaveJoined] on the joining side.
package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
)

// Member is what the approving side of a join needs of its embedded
// member (implemented by [*Embedded]).
type Member interface {
	// AddLearner adds a non-voting member (it cannot cost the cluster its
	// quorum while it catches up; every member's promotion loop makes it
	// a voter once it has) and returns its id and the initial-cluster
	// string the joiner starts with (every member, the new one included).
	AddLearner(ctx context.Context, name string, peerURLs []string) (memberID uint64, initialCluster string, err error)
	ClusterID() uint64
}

// Joined is what a joining node ends with; [SaveJoined] persists it.
type Joined struct {
	RootKey        secret.Bytes // 32 bytes, from its own TPM's credential activation
	Name           string       // this node's member name
	InitialCluster string       // "n1=https://…:2380,n2=…" including itself
	ClusterID      uint64
	MemberID       uint64
}

// SaveJoined seals the root key to this node's TPM under cfg's PCR policy
// (tpm.pcrs) and writes the node-local state of cfg's data directory, so
// that the next start runs the member with initial-cluster-state
// existing. It refuses a data directory that already has node-local state.
// It does not wipe j.RootKey (the caller owns it).
func SaveJoined(ctx context.Context, tpm transport.TPM, cfg config.Config, j Joined) error {
	if j.RootKey.Len() != 32 {
		return errors.New("cluster: the root key must be 32 bytes")
	}
	if j.Name == "" || j.InitialCluster == "" {
		return errors.New("cluster: a joined node needs its name and the initial cluster")
	}
	if _, err := LoadState(cfg.Data.Dir); err == nil {
		return ErrHasState
	} else if !errors.Is(err, ErrNoState) {
		return err
	}
	st := &State{Name: j.Name, MemberID: j.MemberID, ClusterID: j.ClusterID, InitialCluster: j.InitialCluster, ClusterState: StateExisting}
	if err := sealInto(ctx, tpm, j.RootKey, cfg.TPM.PCRs, st); err != nil {
		return err
	}
	return st.Save(cfg.Data.Dir)
}

// sealInto seals key to tpm with pcrs into st.SealedRoot.
func sealInto(ctx context.Context, tpm transport.TPM, key secret.Bytes, pcrs []int, st *State) error {
	sealed, err := enclave.SealRoot(ctx, tpm, key, pcrs)
	if err != nil {
		return fmt.Errorf("cluster: seal the root key: %w", err)
	}
	b, err := sealed.Marshal()
	if err != nil {
		return err
	}
	st.SealedRoot = b
	return nil
}

// NewState makes the node-local state of a node that bootstraps a new
// cluster (`keywarden cluster init`): the root key sealed to tpm with
// pcrs, this node's name and a one-member initial cluster.
func NewState(ctx context.Context, tpm transport.TPM, key secret.Bytes, pcrs []int, name, peerAdvertise string) (*State, error) {
	st := &State{Name: name, InitialCluster: name + "=" + peerAdvertise, ClusterState: StateNew}
	if err := sealInto(ctx, tpm, key, pcrs, st); err != nil {
		return nil, err
	}
	return st, nil
}

// Sealed is the state's sealed root key.
func (s *State) Sealed() (*enclave.SealedRoot, error) {
	return enclave.UnmarshalSealedRoot(s.SealedRoot)
}

// Unseal unseals the state's root key with tpm.
func (s *State) Unseal(ctx context.Context, tpm transport.TPM) (*enclave.Root, error) {
	sealed, err := s.Sealed()
	if err != nil {
		return nil, err
	}
	key, err := enclave.UnsealRoot(ctx, tpm, sealed)
	if err != nil {
		return nil, err
	}
	defer key.Wipe()
	return enclave.NewRoot(key)
}
