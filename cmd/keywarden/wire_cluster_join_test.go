package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/config"
)

// TestJoinPolicyConfigNamesTheField: an unreadable or invalid
// cluster.join_policy or cluster.join_ek_roots is refused naming the
// setting; a valid policy gives its PCRs as the selection joiners quote.
func TestJoinPolicyConfigNamesTheField(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"bank":"sha256","pcrs":{"7":["`+strings.Repeat("ab", 32)+`"],"0":["`+strings.Repeat("00", 32)+`"]}}`)
	for _, tc := range []struct {
		policy, roots, want string
	}{
		{filepath.Join(dir, "missing.json"), "", "cluster.join_policy"},
		{write("empty.json", `{"pcrs":{}}`), "", "cluster.join_policy"},
		{write("bad.json", `{"pcrs":{"7":["zz"]}}`), "", "cluster.join_policy"},
		{good, write("roots.pem", "not a certificate"), "cluster.join_ek_roots"},
	} {
		cfg := config.DevDefaults()
		cfg.ClusterJoin = config.ClusterJoin{JoinPolicy: tc.policy, JoinEKRoots: tc.roots}
		if err := checkJoinPolicy(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want an error naming %s, got %v", cfg.ClusterJoin, tc.want, err)
		}
	}
	cfg := config.DevDefaults()
	cfg.ClusterJoin.JoinPolicy = good
	p, pcrs, err := joinPolicy(cfg)
	if err != nil || p == nil || len(pcrs) != 2 || pcrs[0] != 0 || pcrs[1] != 7 {
		t.Fatalf("good policy: %v %v %v", p, pcrs, err)
	}
	if err := checkJoinPolicy(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestJoinUnverifiedEKIsFlagged: outside dev mode a member approves joins
// without TPM makers' roots only with cluster.join_allow_unverified_ek,
// and then its admin readiness flags it (a private degraded check); dev
// mode (the simulator has no maker certificate) is unchanged; with roots
// nothing unverified is allowed.
func TestJoinUnverifiedEKIsFlagged(t *testing.T) {
	prod := config.Defaults()
	if allow, flag := joinUnverifiedEK(prod); allow || flag != nil {
		t.Fatalf("default: allow %v, flag %v", allow, flag)
	}
	prod.ClusterJoin.JoinAllowUnverifiedEK = true
	allow, flag := joinUnverifiedEK(prod)
	if !allow || flag == nil || !flag.Private || flag.Name != "join_ek" {
		t.Fatalf("opt-out: allow %v, flag %+v", allow, flag)
	}
	if err := flag.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "cluster.join_allow_unverified_ek") {
		t.Fatalf("the readiness check does not name the setting: %v", err)
	}
	withRoots := prod
	withRoots.ClusterJoin.JoinEKRoots = "/etc/keywarden/tpm-makers.pem"
	if allow, flag := joinUnverifiedEK(withRoots); allow || flag != nil {
		t.Fatalf("with roots: allow %v, flag %v", allow, flag)
	}
	if allow, flag := joinUnverifiedEK(config.DevDefaults()); !allow || flag != nil {
		t.Fatalf("dev mode: allow %v, flag %v", allow, flag)
	}
}
