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
	// JoinAllowUnverifiedEK lets this member approve joins outside dev
	// mode without JoinEKRoots: a joining node's EK is then only what it
	// claims, and nothing but the operator's comparison of its EK
	// fingerprint tells a real TPM from a software one. Off by default;
	// flagged as degraded in the admin readiness when on.
	JoinAllowUnverifiedEK bool `key:"join_allow_unverified_ek"`
}

func (j ClusterJoin) validate(dev bool) (p problems) {
	if j.JoinAllowUnverifiedEK && j.JoinEKRoots != "" {
		p.add("cluster.join_allow_unverified_ek", "contradicts cluster.join_ek_roots (with TPM makers' roots every EK is verified); unset one of them")
	}
	if !dev && j.JoinPolicy != "" && j.JoinEKRoots == "" && !j.JoinAllowUnverifiedEK {
		p.add("cluster.join_ek_roots", "required to approve joins outside dev mode (cluster.join_policy is set): without TPM makers' CA certificates "+
			"a software TPM can pose as a joining node; to rely on the operator's comparison of the EK fingerprint alone, "+
			"set cluster.join_allow_unverified_ek: true")
	}
	return p
}
