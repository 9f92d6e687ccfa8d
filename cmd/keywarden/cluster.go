package main

// `keywarden cluster init | status | remove`: the embedded backend's
// cluster (see embedded.go and package cluster).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
)

// cmdCluster is `keywarden cluster …`: init, status and remove here, the
// attested join's join, joins, approve and refuse in cluster_join.go.
func cmdCluster(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("cluster: want `cluster init`, `cluster status`, `cluster remove NAME|ID`, `cluster join URL`, `cluster joins`, `cluster approve ID` or `cluster refuse ID`")
	}
	if ok, err := clusterJoinCommand(ctx, args); ok {
		return err
	}
	switch args[0] {
	case "init":
		return cmdClusterInit(ctx, args[1:])
	case "status":
		return cmdClusterStatus(ctx, args[1:])
	case "remove":
		return cmdClusterRemove(ctx, args[1:])
	}
	return usageError("cluster: unknown sub-command " + args[0])
}

// cmdClusterInit makes the first node of a new cluster on a fresh data
// directory with store.backend embedded, in this order: check the
// recovery settings → refuse an initialized data directory → open the
// TPM → make the root key and seal it to this TPM and tpm.pcrs → the
// attestation key → bootstrap a one-member cluster (the member, the store
// on it) → rollback counter and recovery shares in the shared store →
// write the node-local state last (a failure before leaves no state, so
// init can run again once data.dir/etcd is removed).
func cmdClusterInit(ctx context.Context, args []string) error {
	var flags initFlagValues
	cfg, _, err := loadConfig(args, os.Getenv("KEYWARDEN_DEV") == "1", flags.register)
	if err != nil {
		return err
	}
	if cfg.Store.Backend != "embedded" {
		return fmt.Errorf("cluster init: store.backend is %q; set store.backend: embedded (KEYWARDEN_STORE_BACKEND=embedded) to run an etcd member in this appliance, or use `keywarden init` for %s", cfg.Store.Backend, cfg.Store.Backend)
	}
	if _, err := cluster.LoadState(cfg.Data.Dir); err == nil {
		return fmt.Errorf("cluster init: %s is already initialized (%s exists); refusing to replace its root key and cluster", cfg.Data.Dir, cluster.StatePath(cfg.Data.Dir))
	} else if !errors.Is(err, cluster.ErrNoState) {
		return fmt.Errorf("cluster init: %w", err)
	}
	settings := recoverySettingsFor(cfg, flags)
	if err := preflightInit(settings); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Data.Dir, 0o700); err != nil {
		return err
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return err
	}
	defer tpm.Close()
	st, root, raw, err := bootstrapNode(ctx, cfg, tpm)
	if err != nil {
		return fmt.Errorf("cluster init: %w", err)
	}
	defer root.Close()
	defer raw.Wipe()
	blob, err := attest.CreateAK(ctx, tpm)
	if err != nil {
		return fmt.Errorf("cluster init: attestation key: %w", err)
	}
	if st.AttestAK, err = blob.MarshalBinary(); err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	m, err := startNodeMember(ctx, cfg, st, root, log)
	if err != nil {
		return fmt.Errorf("cluster init: %w", err)
	}
	defer m.Close()
	db, err := openMemberStore(ctx, cfg, m)
	if err != nil {
		return fmt.Errorf("cluster init: %w", err)
	}
	defer db.Close()
	c := initContext{cfg: cfg, tpm: tpm, db: db, root: root, raw: raw}
	if err := rollbackInitStep(ctx, c); err != nil {
		return err
	}
	if err := recoveryInitStep(ctx, c, settings); err != nil {
		return err
	}
	st.MemberID, st.ClusterID = m.MemberID(), m.ClusterID()
	if err := st.Save(cfg.Data.Dir); err != nil {
		return fmt.Errorf("cluster init: %w", err)
	}
	if err := printAKName(os.Stderr, blob, true); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "cluster %s initialized: member %q (id %s) at %s; root key sealed to %s (PCRs %v)\n",
		cluster.ID(st.ClusterID), st.Name, cluster.ID(st.MemberID), cfg.Cluster.PeerAdvertise, cfg.TPM.Path, cfg.TPM.PCRs)
	if len(cfg.TPM.PCRs) == 0 {
		fmt.Fprintln(os.Stderr, "WARNING: no PCR policy (tpm.allow_no_pcr_policy): the root key is bound to this TPM only; `keywarden status` flags it")
	}
	return nil
}

// cmdClusterStatus prints the members as the running node sees them.
func cmdClusterStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cluster status", flag.ContinueOnError)
	api := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	st, raw, err := clusterStatus(ctx, api)
	if err != nil {
		return err
	}
	if *asJSON {
		fmt.Println(string(raw))
		return nil
	}
	printClusterStatus(os.Stdout, st)
	return nil
}

func clusterStatus(ctx context.Context, api *adminAPI) (cluster.Status, []byte, error) {
	resp, err := api.do(ctx, http.MethodGet, "/v1/admin/cluster", 30*time.Second)
	if err != nil {
		return cluster.Status{}, nil, fmt.Errorf("cluster status: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return cluster.Status{}, nil, errors.New("cluster status: the server has no cluster routes (is store.backend embedded?)")
	}
	var st cluster.Status
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &st) != nil {
		return st, nil, fmt.Errorf("cluster status: server answered %s: %.4096s", resp.Status, b)
	}
	return st, b, nil
}

func printClusterStatus(w io.Writer, st cluster.Status) {
	fmt.Fprintf(w, "cluster %s, leader %s\n", st.ClusterID, leaderName(st))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tPEER URL\tROLE\t")
	for _, m := range st.Members {
		role := "voter"
		if m.Learner {
			role = "learner"
		}
		if m.Leader {
			role += ", leader"
		}
		if m.Self {
			role += ", this node"
		}
		name := m.Name
		if name == "" {
			name = "(not started)"
		}
		peer := ""
		if len(m.PeerURLs) > 0 {
			peer = m.PeerURLs[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", name, m.ID, peer, role)
	}
	tw.Flush()
}

func leaderName(st cluster.Status) string {
	for _, m := range st.Members {
		if m.Leader {
			return m.Name
		}
	}
	return "NONE (no quorum?)"
}

// cmdClusterRemove removes a member by name or id (the server refuses the
// last voter, a removal that would lose quorum, and itself).
func cmdClusterRemove(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cluster remove", flag.ContinueOnError)
	api := adminFlags(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() != 1 {
		return usageError("cluster remove: want one member NAME or ID")
	}
	who := fs.Arg(0)
	st, _, err := clusterStatus(ctx, api)
	if err != nil {
		return err
	}
	var id cluster.ID
	for _, m := range st.Members {
		if m.Name == who || m.ID.String() == who {
			if id != 0 {
				return fmt.Errorf("cluster remove: %q names more than one member; give the id", who)
			}
			id = m.ID
		}
	}
	if id == 0 {
		return fmt.Errorf("cluster remove: no member named or numbered %q (see `keywarden cluster status`)", who)
	}
	resp, err := api.do(ctx, http.MethodDelete, "/v1/admin/cluster/members/"+url.PathEscape(id.String()), 30*time.Second)
	if err != nil {
		return fmt.Errorf("cluster remove: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("cluster remove: refused (%s): %s", e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("cluster remove: server answered %s: %.4096s", resp.Status, b)
	}
	fmt.Printf("removed member %s (%s)\n", who, id)
	return nil
}
