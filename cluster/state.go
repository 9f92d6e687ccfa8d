package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNoState means the data directory has no node-local state: the node
// was never initialized (`keywarden cluster init`) nor joined.
var ErrNoState = errors.New("cluster: this node has no node-local state: run `keywarden cluster init` on the first node, or join it to a cluster")

// ErrHasState means a command that makes a node found one already there.
var ErrHasState = errors.New("cluster: this data directory already belongs to a node (node/state.json exists); refusing to replace its root key and membership")

// stateVersion is the format of state.json.
const stateVersion = 1

// Cluster states of [State.ClusterState] (etcd's initial-cluster-state).
const (
	StateNew      = "new"      // the node bootstraps a new cluster (cluster init)
	StateExisting = "existing" // the node was added to a running cluster (join)
)

// State is what belongs to one node and must be readable before etcd is
// up, so it cannot live in the shared key space: the root key sealed to
// THIS node's TPM (every node seals the same key to its own TPM and PCRs),
// this node's attestation key and Vault client key blobs, and its place in
// the cluster. It is
// one JSON file, data.dir/node/state.json, mode 0600 in a 0700 directory,
// written atomically (temporary file, fsync, rename, fsync of the
// directory). Nothing in it is secret on its own: the sealed root opens
// only in this TPM under its PCR policy, and the attestation key blob is
// TPM-wrapped.
type State struct {
	Version int `json:"version"`
	// SealedRoot is enclave.SealedRoot's JSON (what bbolt keeps in
	// meta/sealed_root).
	SealedRoot json.RawMessage `json:"sealed_root"`
	// AttestAK is the attestation key blob (attest.AKBlob's binary form;
	// what bbolt keeps in meta/attest_ak); empty until one is made.
	AttestAK []byte `json:"attest_ak,omitempty"`
	// VaultClientKey is this node's Vault client key blob
	// (attest.ClientKeyBlob's binary form; what bbolt keeps in
	// meta/vault_client_key), made by `keywarden vault csr`; empty until
	// then. Like the attestation key it loads in this node's TPM only.
	VaultClientKey []byte `json:"vault_client_key,omitempty"`
	// Name is this node's etcd member name.
	Name string `json:"name"`
	// MemberID and ClusterID are etcd's ids (0 until known: a node that
	// bootstraps learns them once its member runs).
	MemberID  uint64 `json:"member_id,omitempty"`
	ClusterID uint64 `json:"cluster_id,omitempty"`
	// InitialCluster is etcd's initial-cluster ("n1=https://…:2380,…",
	// this node included) and ClusterState its initial-cluster-state
	// (StateNew or StateExisting). etcd reads them only while its data
	// directory is empty.
	InitialCluster string `json:"initial_cluster"`
	ClusterState   string `json:"cluster_state"`
}

// StatePath is where a data directory keeps the node-local state.
func StatePath(dataDir string) string { return filepath.Join(dataDir, "node", "state.json") }

// LoadState reads the node-local state of dataDir ([ErrNoState] when
// there is none).
func LoadState(dataDir string) (*State, error) {
	p := StatePath(dataDir)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoState
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: node-local state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cluster: node-local state %s is damaged: %v", p, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("cluster: node-local state %s has format %d; this build reads %d", p, s.Version, stateVersion)
	}
	if len(s.SealedRoot) == 0 || s.Name == "" || s.InitialCluster == "" || (s.ClusterState != StateNew && s.ClusterState != StateExisting) {
		return nil, fmt.Errorf("cluster: node-local state %s is incomplete (sealed_root, name, initial_cluster and cluster_state are required)", p)
	}
	return &s, nil
}

// Save writes the state to dataDir atomically, replacing any.
func (s *State) Save(dataDir string) error {
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	p := StatePath(dataDir)
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster: node-local state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("cluster: node-local state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing there
	if err := tmp.Chmod(0o600); err == nil {
		if _, err = tmp.Write(b); err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), p)
		}
		if err != nil {
			return fmt.Errorf("cluster: write node-local state: %w", err)
		}
	} else {
		tmp.Close()
		return fmt.Errorf("cluster: node-local state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
