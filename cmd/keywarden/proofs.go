package main

// `keywarden audit verify` with public keys only and `keywarden receipt
// verify`: neither opens a TPM or a store, and neither needs a complete
// configuration. The trusted appliance signing key comes from -key (a
// GET /v1/appliance-keys document or a PEM public key) or -url (the
// node's public listener); with neither, from the dev node's default
// listener (config: dev defaults, then the KEYWARDEN_… environment).

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/receipt"
	"github.com/keywarden/keywarden/server/attestapi"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// trustFlags are the flags naming the trusted appliance signing keys.
type trustFlags struct {
	keys   stringList
	url    string
	akName string
}

func (f *trustFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.keys, "key", "trusted appliance key: a saved GET /v1/appliance-keys document or a PEM public key (repeatable)")
	fs.StringVar(&f.url, "url", "", "fetch the appliance keys from this node's public listener (default: the dev node's, http://127.0.0.1:8420)")
	fs.StringVar(&f.akName, "ak-name", "", "pin the attestation key (hex TPM Name, from `keywarden attest verify`): the appliance-keys document must be certified by it")
}

// lenientConfig is dev defaults with the KEYWARDEN_… environment, for
// defaults only: whatever fails validation does not matter here.
func lenientConfig() config.Config {
	c, _ := config.Load(config.DevDefaults(), "", os.Environ())
	return c
}

// trusted returns the appliance signing keys to trust and where they came
// from.
func (f *trustFlags) trusted(ctx context.Context) ([]*ecdsa.PublicKey, []string, error) {
	var pin []byte
	if f.akName != "" {
		b, err := hex.DecodeString(strings.TrimSpace(f.akName))
		if err != nil {
			return nil, nil, usageError("-ak-name: not hex")
		}
		pin = b
	}
	var keys []*ecdsa.PublicKey
	var notes []string
	for _, p := range f.keys {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		k, note, err := parseTrustedKey(b, pin)
		if err != nil {
			return nil, nil, fmt.Errorf("-key %s: %w", p, err)
		}
		keys, notes = append(keys, k), append(notes, p+": "+note)
	}
	if len(f.keys) > 0 && f.url == "" {
		return keys, notes, nil
	}
	u := f.url
	if u == "" {
		c := lenientConfig()
		scheme := "https://"
		if c.Listen.PlainHTTP {
			scheme = "http://"
		}
		u = scheme + c.Listen.Addr
	}
	u = strings.TrimSuffix(u, "/")
	if !strings.HasSuffix(u, "/v1/appliance-keys") {
		u += "/v1/appliance-keys"
	}
	body, err := fetchKeys(ctx, u)
	if err != nil {
		return nil, nil, err
	}
	k, note, err := parseTrustedKey(body, pin)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", u, err)
	}
	return append(keys, k), append(notes, u+": "+note), nil
}

func fetchKeys(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, usageError("-url: " + err.Error())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the appliance keys: %w (is the node running? name it with -url, or give -key FILE)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %d: %s", u, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// parseTrustedKey reads an appliance-keys document (checked against the
// AK) or a PEM public key.
func parseTrustedKey(b, pin []byte) (*ecdsa.PublicKey, string, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if pin != nil {
			return nil, "", errors.New("a bare PEM key cannot be checked against -ak-name: give the appliance-keys document")
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, "", err
		}
		ek, ok := k.(*ecdsa.PublicKey)
		if !ok {
			return nil, "", errors.New("not an ECDSA public key")
		}
		return ek, "PEM key " + receipt.KeyID(ek)[:16] + "… (trusted as given)", nil
	}
	k, doc, err := attestapi.VerifyApplianceKeys(b, pin)
	if err != nil {
		return nil, "", err
	}
	note := fmt.Sprintf("signing key %s… certified by AK %s", receipt.KeyID(k)[:16], doc.AKName)
	if pin == nil {
		note += " (AK not pinned: pass -ak-name to check it is the attested one)"
	} else {
		note += " (pinned)"
	}
	return k, note, nil
}

// cmdAuditVerify is `keywarden audit verify`: with public keys by
// default; -hmac runs the stopped node's check with its TPM and store.
func cmdAuditVerify(args []string) error {
	for _, a := range args {
		if a == "-hmac" || a == "--hmac" {
			rest := make([]string, 0, len(args))
			for _, b := range args {
				if b != a {
					rest = append(rest, b)
				}
			}
			return cmdAuditVerifyHMAC(rest)
		}
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	var tf trustFlags
	tf.register(fs)
	complete := fs.Bool("complete", false, "the log must end with a signed anchor (a copy of a stopped node's log)")
	fromStart := fs.Bool("from-start", false, "the log must start at genesis (seq 1): a log missing its first files fails")
	fs.Bool("hmac", false, "check a stopped node's log with its TPM and store (HMAC anchors and the recorded head; -config FILE)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{lenientConfig().Audit.Dir}
	}
	keys, notes, err := tf.trusted(context.Background())
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Println("trusting", n)
	}
	rep, err := audit.VerifySigned(paths, keys, audit.SignedOptions{Complete: *complete, FromStart: *fromStart})
	fmt.Printf("audit log %s: %d lines (seq %d..%d) in %d files, %d signed anchors\n",
		strings.Join(paths, " "), rep.Lines, rep.FirstSeq, rep.LastSeq, len(rep.Files), rep.Anchors)
	switch {
	case rep.Lines == 0:
	case rep.Genesis:
		fmt.Println("starts at genesis (seq 1): no earlier line is missing")
	default:
		fmt.Printf("does NOT start at genesis: the first line is seq %d, lines 1..%d are missing (removed for retention, or cut; -from-start makes this an error)\n", rep.FirstSeq, rep.FirstSeq-1)
	}
	if rep.LastAnchor != nil {
		fmt.Printf("signed: seq %d..%d, %s to %s (last signed anchor %s)\n", rep.FirstSeq, rep.LastAnchor.Seq, rep.FirstTime, rep.SignedThrough, rep.LastAnchor)
	}
	if len(rep.Nodes) > 0 && !(len(rep.Nodes) == 1 && rep.Nodes[0] == "") {
		fmt.Printf("nodes: %s\n", strings.Join(rep.Nodes, ", "))
	}
	if rep.Unsigned > 0 {
		fmt.Printf("not yet signed: %d line(s) after the last signed anchor (a live log signs them at its next anchor)\n", rep.Unsigned)
	}
	if rep.Partial {
		fmt.Println("the last line is being written (incomplete): not checked")
	}
	for _, in := range rep.Incidents {
		fmt.Printf("incident: %s %s at %s\n", in.Action, in.Reason, in.Position)
	}
	if rep.Broken != nil {
		fmt.Printf("FIRST BROKEN ENTRY: %s\n", rep.Broken)
	}
	if err == nil {
		fmt.Println("chain and signed anchors verify")
	}
	return err
}

// cmdReceipt is `keywarden receipt verify FILE`.
func cmdReceipt(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError("receipt: want `receipt verify FILE`")
	}
	fs := flag.NewFlagSet("receipt verify", flag.ContinueOnError)
	var tf trustFlags
	tf.register(fs)
	owner := fs.String("owner", "", "check that the receipt is about this owner id (as the audit log names it)")
	auditDir := fs.String("audit", "", "also find the receipt's line in this audit directory or file and check it matches")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() != 1 {
		return usageError("receipt verify: want one FILE (the Keywarden-Receipt header value, or its JSON; - for stdin)")
	}
	var raw []byte
	var err error
	if fs.Arg(0) == "-" {
		raw, err = io.ReadAll(io.LimitReader(os.Stdin, receipt.MaxEncoded+1))
	} else {
		raw, err = os.ReadFile(fs.Arg(0))
	}
	if err != nil {
		return err
	}
	r, err := receipt.Parse(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(raw)), receipt.Header+":")))
	if err != nil {
		return err
	}
	keys, notes, err := tf.trusted(ctx)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Println("trusting", n)
	}
	if err := receipt.Verify(r, keys...); err != nil {
		return err
	}
	s := r.Statement
	fmt.Printf("receipt verifies: %s %s of method %s (key version %s) at %s, request %s, audit seq %d", s.Action, s.Outcome, s.Method, s.KeyVersion, s.Time, s.RequestID, s.Seq)
	if s.Node != "" {
		fmt.Printf(" on node %s", s.Node)
	}
	fmt.Println()
	if *owner != "" {
		if !s.IsOwner(*owner) {
			return fmt.Errorf("%w: the receipt is not about owner %q", receipt.ErrInvalid, *owner)
		}
		fmt.Println("owner matches")
	}
	if *auditDir != "" {
		line, err := audit.FindLine([]string{*auditDir}, s.Seq)
		if err != nil {
			return err
		}
		if err := receipt.MatchLine(r, line); err != nil {
			return err
		}
		fmt.Printf("matches audit line seq %d\n", s.Seq)
	}
	return nil
}
