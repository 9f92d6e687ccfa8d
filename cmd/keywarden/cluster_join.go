package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
)

// saveJoined persists what a joining node ends with (the root key sealed
// to this TPM, the node-local state): cluster.SaveJoined; a test may stop
// a join there.
var saveJoined = cluster.SaveJoined

// stdin is where approve reads the operator's confirmation.
var stdin io.Reader = os.Stdin

// clusterJoinCommand runs the join's subcommands (join, joins, approve,
// refuse); ok is false for any other.
func clusterJoinCommand(ctx context.Context, args []string) (ok bool, err error) {
	if len(args) == 0 {
		return false, nil
	}
	switch args[0] {
	case "join":
		return true, cmdClusterJoin(ctx, args[1:])
	case "joins":
		return true, cmdClusterJoins(ctx, args[1:])
	case "approve":
		return true, cmdClusterApprove(ctx, args[1:])
	case "refuse":
		return true, cmdClusterRefuse(ctx, args[1:])
	}
	return false, nil
}

// joinFlags are `cluster join`'s own flags.
type joinFlags struct {
	name, peer, caFile, serverName *string
	poll, timeout                  *time.Duration
}

func (f *joinFlags) register(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	f.name = fs.String("name", envOr("KEYWARDEN_CLUSTER_NAME", host), "this node's member name (default: cluster.name, else the host name)")
	f.peer = fs.String("peer", os.Getenv("KEYWARDEN_CLUSTER_PEER_ADVERTISE"), "https URL(s), comma-separated, at which the members reach this node's etcd peer port (default: cluster.peer_advertise)")
	f.caFile = fs.String("cacert", "", "CA certificate (PEM) that signed the member's admin listener TLS certificate")
	f.serverName = fs.String("server-name", "", "TLS server name to verify")
	f.poll = fs.Duration("poll", 2*time.Second, "how often to ask whether the request was approved")
	f.timeout = fs.Duration("timeout", join.RequestTTL, "give up after this long")
}

// cmdClusterJoin is `keywarden cluster join [flags] URL`: this node asks
// the member at URL (its admin listener) to join the cluster, proving its
// TPM and boot state, waits for an operator's approval and recovers the
// root key through its own TPM.
func cmdClusterJoin(ctx context.Context, args []string) error {
	var f joinFlags
	cfg, fs, err := loadConfig(args, os.Getenv("KEYWARDEN_DEV") == "1", f.register)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("cluster join [-name N] [-peer https://host:2380] https://member-admin:port")
	}
	base := strings.TrimRight(fs.Arg(0), "/")
	if u, err := url.Parse(base); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return usageError("cluster join: the member's admin URL must be http(s)://host:port")
	}
	var peers []string
	for _, p := range strings.Split(*f.peer, ",") {
		if p = strings.TrimSpace(p); p != "" {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return usageError("cluster join: -peer https://host:port is required (where the members reach this node's etcd peer port)")
	}
	hc, err := joinClient(*f.caFile, *f.serverName)
	if err != nil {
		return err
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return err
	}
	defer tpm.Close()

	var n join.Nonce
	if err := joinCall(ctx, hc, http.MethodPost, base+"/v1/cluster/joins/nonce", "", nil, http.StatusOK, &n); err != nil {
		return fmt.Errorf("cluster join: nonce: %w", err)
	}
	req, ak, err := join.Prepare(ctx, tpm, &n, *f.name, peers)
	if err != nil {
		return fmt.Errorf("cluster join: %w", err)
	}
	defer ak.Close()
	var sub join.Submitted
	if err := joinCall(ctx, hc, http.MethodPost, base+"/v1/cluster/joins", "", req, http.StatusAccepted, &sub); err != nil {
		return fmt.Errorf("cluster join: request: %w", err)
	}
	fmt.Printf("join request %s sent as %q\n  AK name:        %s\n  EK fingerprint: %s\n", sub.ID, *f.name, sub.AKName, sub.EKFingerprint)
	fmt.Printf("On any member, compare both values and run:\n  keywarden cluster approve %s\nWaiting for the approval (until %s)…\n", sub.ID, sub.Expires.Format(time.RFC3339))

	deadline := time.Now().Add(*f.timeout)
	var st join.Status
	for {
		if err := joinCall(ctx, hc, http.MethodGet, base+"/v1/cluster/joins/"+sub.ID, sub.PollSecret, nil, http.StatusOK, &st); err != nil {
			return fmt.Errorf("cluster join: poll: %w", err)
		}
		if st.State != join.StatePending {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("cluster join: no approval before -timeout; the request stays pending until it expires")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*f.poll):
		}
	}
	switch st.State {
	case join.StateApproved:
	case join.StateRefused:
		return fmt.Errorf("cluster join: the request was refused (%s)", st.Reason)
	default:
		return fmt.Errorf("cluster join: the request is %s", st.State)
	}
	joined, err := join.Recover(ctx, tpm, ak, sub.ID, *f.name, st.Answer)
	if err != nil {
		return fmt.Errorf("cluster join: %w", err)
	}
	defer joined.RootKey.Wipe()
	if err := saveJoined(ctx, tpm, cfg, joined); err != nil {
		return fmt.Errorf("cluster join: approved, but the joined state was not kept: %w", err)
	}
	if err := auditJoined(ctx, cfg, joined, sub); err != nil {
		return fmt.Errorf("cluster join: %w", err)
	}
	fmt.Printf("joined cluster %016x as member %016x (%s); start the appliance to catch up\n", joined.ClusterID, joined.MemberID, joined.Name)
	return nil
}

// auditJoined writes cluster_joined into this node's own audit log,
// anchored with the cluster's root key it now holds.
func auditJoined(ctx context.Context, cfg config.Config, j cluster.Joined, sub join.Submitted) error {
	root, err := enclave.NewRoot(j.RootKey)
	if err != nil {
		return err
	}
	defer root.Close()
	return audit.AppendOffline(ctx, audit.Options{Dir: cfg.Audit.Dir, AnchorKey: root.Subkey(enclave.SubkeyAuditAnchor)}, audit.Event{
		Action: join.ActionJoined, Outcome: audit.OutcomeSuccess,
		Fields: map[string]string{
			"join_id": sub.ID, "name": j.Name, "ak_name": sub.AKName, "ek_fingerprint": sub.EKFingerprint,
			"cluster_id": fmt.Sprintf("%x", j.ClusterID), "member_id": fmt.Sprintf("%x", j.MemberID),
		},
	})
}

// joinClient is the joiner's HTTP client: no admin key, the member's TLS
// checked against -cacert (or the system roots).
func joinClient(caFile, serverName string) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-cacert: %w", err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("-cacert: no PEM certificate in the file")
		}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}, nil
}

// joinCall sends body (JSON, or none) with an optional bearer token and
// decodes an answer of status want into out; any other answer is an error
// carrying the server's code and message.
func joinCall(ctx context.Context, hc *http.Client, method, u, bearer string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s: %s (%s)", resp.Status, e.Error.Message, e.Error.Code)
		}
		return fmt.Errorf("server answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// adminJoinCall is joinCall with the admin API's flags and key.
func adminJoinCall(ctx context.Context, api *adminAPI, method, path string, body any, out any) error {
	key, hc, err := adminClient(*api.caFile, *api.serverName, *api.certFile, *api.keyFile, time.Minute)
	if err != nil {
		return err
	}
	return joinCall(ctx, hc, method, strings.TrimRight(*api.url, "/")+path, key, body, http.StatusOK, out)
}

// cmdClusterJoins is `keywarden cluster joins`: every join request kept.
func cmdClusterJoins(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cluster joins", flag.ContinueOnError)
	api := adminFlags(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	var l struct {
		Joins []join.Pending `json:"joins"`
	}
	if err := adminJoinCall(ctx, api, http.MethodGet, "/v1/admin/cluster/joins", nil, &l); err != nil {
		return fmt.Errorf("cluster joins: %w", err)
	}
	for _, p := range l.Joins {
		fmt.Printf("%s  %-8s  %-20s  AK %s  EK %s  expires %s\n", p.ID, p.State, p.Name, p.AKName, p.EKFingerprint, p.Expires.Format(time.RFC3339))
	}
	return nil
}

// cmdClusterApprove is `keywarden cluster approve [-yes] ID`: it shows the
// request (AK name and EK fingerprint to compare with what the joining
// node printed), asks, and approves.
func cmdClusterApprove(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cluster approve", flag.ContinueOnError)
	api := adminFlags(fs)
	yes := fs.Bool("yes", false, "approve without asking (compare the AK name and EK fingerprint first)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() != 1 {
		return usageError("cluster approve [-yes] ID")
	}
	id := fs.Arg(0)
	var p join.Pending
	if err := adminJoinCall(ctx, api, http.MethodGet, "/v1/admin/cluster/joins/"+url.PathEscape(id), nil, &p); err != nil {
		return fmt.Errorf("cluster approve: %w", err)
	}
	printPending(os.Stdout, p)
	if !*yes {
		fmt.Print("Do the AK name and EK fingerprint match what the joining node printed? Type yes to approve: ")
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if strings.TrimSpace(line) != "yes" {
			return errors.New("cluster approve: not approved")
		}
	}
	if err := adminJoinCall(ctx, api, http.MethodPost, "/v1/admin/cluster/joins/"+url.PathEscape(id)+"/approve", nil, &p); err != nil {
		return fmt.Errorf("cluster approve: %w", err)
	}
	fmt.Printf("approved: %s joins as member %s\n", p.Name, p.MemberID)
	return nil
}

// cmdClusterRefuse is `keywarden cluster refuse [-reason CODE] ID`.
func cmdClusterRefuse(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cluster refuse", flag.ContinueOnError)
	api := adminFlags(fs)
	reason := fs.String("reason", "", "a snake_case reason for the audit log (default refused_by_operator)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() != 1 {
		return usageError("cluster refuse [-reason CODE] ID")
	}
	var p join.Pending
	if err := adminJoinCall(ctx, api, http.MethodPost, "/v1/admin/cluster/joins/"+url.PathEscape(fs.Arg(0))+"/refuse", map[string]string{"reason": *reason}, &p); err != nil {
		return fmt.Errorf("cluster refuse: %w", err)
	}
	fmt.Printf("refused: %s (%s)\n", p.ID, p.Reason)
	return nil
}

func printPending(w io.Writer, p join.Pending) {
	fmt.Fprintf(w, "join request %s (%s)\n  name:           %s\n  peer URLs:      %s\n  AK name:        %s\n  EK fingerprint: %s\n",
		p.ID, p.State, p.Name, strings.Join(p.PeerURLs, ", "), p.AKName, p.EKFingerprint)
	if p.EKCertificate != "" {
		fmt.Fprintf(w, "  EK certificate: %s\n", p.EKCertificate)
	} else {
		fmt.Fprintf(w, "  EK certificate: none (compare the EK fingerprint out of band)\n")
	}
	if p.Remote != "" {
		fmt.Fprintf(w, "  from:           %s\n", p.Remote)
	}
	keys := make([]string, 0, len(p.PCRs))
	for k := range p.PCRs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return len(keys[i]) < len(keys[j]) || (len(keys[i]) == len(keys[j]) && keys[i] < keys[j])
	})
	for _, k := range keys {
		fmt.Fprintf(w, "  PCR %-2s        %s\n", k, p.PCRs[k])
	}
}
