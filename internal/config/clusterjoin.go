package config

// ClusterJoin configures how this member admits joining nodes (the
// attested join, package cluster/join). Its settings live in the cluster
// section beside the member's own (cluster.name, …).
type ClusterJoin struct {
	// JoinPolicy is an attestation policy file (the JSON or YAML that
	// `keywarden attest policy` prints): the PCR values a joining node's
	// quote must show for this member to approve it. Required to approve
	// joins outside dev mode; in dev mode, when unset, this member's own
	// PCR values are the policy. cmd/keywarden parses it at start and in
	// `config check`, naming cluster.join_policy when it does not parse.
	JoinPolicy string `key:"join_policy"`
	// JoinEKRoots is a PEM file of TPM makers' root (and intermediate)
	// certificates. When set, a joining node must present a certificate of
	// its endorsement key that chains to one of them; when unset, its EK
	// is known by the fingerprint the operator compares at approval.
	JoinEKRoots string `key:"join_ek_roots"`
}
