package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClusterJoinPolicySetting: cluster.join_policy comes from the file's
// cluster section and from KEYWARDEN_CLUSTER_JOIN_POLICY, env last.
func TestClusterJoinPolicySetting(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("cluster:\n  join_policy: /etc/keywarden/join-policy.json\n  join_ek_roots: /etc/keywarden/tpm-makers.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(prodBase(), f, nil)
	if err != nil || c.ClusterJoin.JoinPolicy != "/etc/keywarden/join-policy.json" {
		t.Fatalf("file: %q %v", c.ClusterJoin.JoinPolicy, err)
	}
	c, err = Load(prodBase(), f, []string{"KEYWARDEN_CLUSTER_JOIN_POLICY=/run/p.json"})
	if err != nil || c.ClusterJoin.JoinPolicy != "/run/p.json" {
		t.Fatalf("env: %q %v", c.ClusterJoin.JoinPolicy, err)
	}
}

// TestJoinEKRootsRequiredOutsideDev: a member set up to approve joins
// (cluster.join_policy) outside dev mode needs TPM makers' roots, or the
// explicit, loudly named opt-out; both at once contradict each other.
// Dev mode is unchanged.
func TestJoinEKRootsRequiredOutsideDev(t *testing.T) {
	base := prodBase()
	base.ClusterJoin.JoinPolicy = "/etc/keywarden/join-policy.json"
	_, err := Load(base, "", nil)
	if err == nil || !strings.Contains(err.Error(), "cluster.join_ek_roots") || !strings.Contains(err.Error(), "cluster.join_allow_unverified_ek") {
		t.Fatalf("a join policy without EK roots outside dev mode: %v", err)
	}
	if _, err := Load(base, "", []string{"KEYWARDEN_CLUSTER_JOIN_EK_ROOTS=/etc/keywarden/tpm-makers.pem"}); err != nil {
		t.Fatalf("with cluster.join_ek_roots: %v", err)
	}
	c, err := Load(base, "", []string{"KEYWARDEN_CLUSTER_JOIN_ALLOW_UNVERIFIED_EK=true"})
	if err != nil || !c.ClusterJoin.JoinAllowUnverifiedEK {
		t.Fatalf("with cluster.join_allow_unverified_ek: %v", err)
	}
	p := filepath.Join(t.TempDir(), "k.yaml")
	os.WriteFile(p, []byte("cluster:\n  join_allow_unverified_ek: true\n"), 0o600)
	if c, err := Load(base, p, nil); err != nil || !c.ClusterJoin.JoinAllowUnverifiedEK {
		t.Fatalf("cluster.join_allow_unverified_ek from a file: %v", err)
	}
	_, err = Load(base, "", []string{"KEYWARDEN_CLUSTER_JOIN_EK_ROOTS=/etc/keywarden/tpm-makers.pem", "KEYWARDEN_CLUSTER_JOIN_ALLOW_UNVERIFIED_EK=true"})
	if err == nil || !strings.Contains(err.Error(), "cluster.join_allow_unverified_ek") {
		t.Fatalf("roots and the opt-out at once: %v", err)
	}
	// A node that approves no joins needs neither.
	if _, err := Load(prodBase(), "", nil); err != nil {
		t.Fatalf("no join policy: %v", err)
	}
	dev := DevDefaults()
	dev.ClusterJoin.JoinPolicy = "/etc/keywarden/join-policy.json"
	if _, err := Load(dev, "", []string{"KEYWARDEN_ADMIN_KEY=dev-admin-key-0123456789"}); err != nil {
		t.Fatalf("dev mode: %v", err)
	}
}
