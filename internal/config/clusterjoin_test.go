package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestClusterJoinPolicySetting: cluster.join_policy comes from the file's
// cluster section and from KEYWARDEN_CLUSTER_JOIN_POLICY, env last.
func TestClusterJoinPolicySetting(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("cluster:\n  join_policy: /etc/keywarden/join-policy.json\n"), 0o600); err != nil {
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
