package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/clusterapi"
)

// applianceMember is the appliance's embedded etcd member when it runs one
// (store.backend: embedded), else nil: the join routes are off.
func applianceMember(a *appliance) cluster.Member {
	if a.member == nil {
		return nil
	}
	return a.member
}

// wireClusterJoins serves the attested cluster join (opts.ClusterJoins) on
// a node that is a cluster member: any member issues nonces, takes join
// requests and approves them (decisions/43).
func wireClusterJoins(ctx context.Context, a *appliance, opts *server.Options) error {
	m := applianceMember(a)
	if m == nil {
		return nil
	}
	policy, pcrs, err := joinPolicy(a.cfg)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	roots, err := joinEKRoots(a.cfg)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	jo := join.Options{DB: a.db, Audit: a.audit, Root: a.root, Member: m, PCRs: pcrs, EKRoots: roots}
	var flag *server.Check
	jo.AllowUnverifiedEK, flag = joinUnverifiedEK(a.cfg)
	if flag != nil {
		opts.Degraded = append(opts.Degraded, *flag)
		a.log.Warn("cluster.join_allow_unverified_ek: true: joining nodes' EKs are not verified against TPM makers' certificates; only the operator's comparison of the EK fingerprint tells a real TPM from a software one")
	} else if roots == nil && !jo.AllowUnverifiedEK {
		a.log.Warn("cluster.join_ek_roots is not set: this member takes join requests but every approval answers 503 join_ek_roots_required")
	}
	switch {
	case policy != nil:
		jo.Policy = func(context.Context) (*attest.Policy, error) { return policy, nil }
	case a.cfg.Dev:
		// Dev mode: the joiner must show this member's own PCR values.
		jo.Policy = func(ctx context.Context) (*attest.Policy, error) {
			v, err := attest.ReadPCRs(ctx, a.tpm, jo.PCRs)
			if err != nil {
				return nil, err
			}
			return attest.PolicyFromPCRs(v)
		}
	default:
		a.log.Warn("cluster.join_policy is not set: this member takes join requests but cannot approve them")
	}
	if len(jo.PCRs) == 0 {
		jo.PCRs = join.DefaultPCRs
	}
	svc, err := join.New(jo)
	if err != nil {
		return err
	}
	opts.ClusterJoins = clusterapi.NewJoins(svc)
	return nil
}

// joinPolicy reads cluster.join_policy (nil when unset) and the PCR
// selection joiners quote: the policy's PCRs, else tpm.pcrs.
func joinPolicy(cfg config.Config) (*attest.Policy, []int, error) {
	if cfg.ClusterJoin.JoinPolicy == "" {
		return nil, cfg.TPM.PCRs, nil
	}
	b, err := os.ReadFile(cfg.ClusterJoin.JoinPolicy)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.join_policy: %w", err)
	}
	p, err := attest.ParsePolicy(b)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.join_policy: %w", err)
	}
	return p, p.Indices(), nil
}

// joinEKRoots reads cluster.join_ek_roots (nil when unset).
func joinEKRoots(cfg config.Config) (*x509.CertPool, error) {
	if cfg.ClusterJoin.JoinEKRoots == "" {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.ClusterJoin.JoinEKRoots)
	if err != nil {
		return nil, fmt.Errorf("cluster.join_ek_roots: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, errors.New("cluster.join_ek_roots: no PEM certificate in the file")
	}
	return p, nil
}

// checkJoinPolicy is `config check`'s (and every command's) check of
// cluster.join_policy and cluster.join_ek_roots.
func checkJoinPolicy(cfg config.Config) error {
	if _, _, err := joinPolicy(cfg); err != nil {
		return err
	}
	_, err := joinEKRoots(cfg)
	return err
}

// joinUnverifiedEK says whether this member approves joins without
// cluster.join_ek_roots — in dev mode (the simulator has no maker's EK
// certificate), or outside it only with cluster.join_allow_unverified_ek —
// and, for that opt-out, the admin readiness check that flags it.
func joinUnverifiedEK(cfg config.Config) (allow bool, flag *server.Check) {
	if cfg.ClusterJoin.JoinEKRoots != "" {
		return false, nil
	}
	if cfg.Dev {
		return true, nil
	}
	if !cfg.ClusterJoin.JoinAllowUnverifiedEK {
		return false, nil
	}
	return true, &server.Check{Name: "join_ek", Private: true, Run: func(context.Context) error {
		return errors.New("unverified: cluster.join_allow_unverified_ek: true approves joining nodes without an EK certificate from a TPM maker; set cluster.join_ek_roots")
	}}
}
