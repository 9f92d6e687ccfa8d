package main

// `keywarden attest …`: check a running appliance before trusting it.
//
//	attest verify  --url URL --policy FILE [--ak-name HEX] [--bind hpke|tls] [--ek-roots PEMFILE] [--ca PEMFILE]
//	attest policy  [--url URL] [--ak-name HEX] [--ca PEMFILE]     print the current PCR values as a starting policy
//	attest ak-name [--url URL] [--ca PEMFILE]                     print the attestation key's Name (trust on first use)
//	attest new-ak  [-config FILE] [--force]                       make a new attestation key (server stopped)
//
// verify, policy and ak-name talk to the appliance over HTTP(S) and need no
// TPM on the operator's machine; the checks are attest.Verify's.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/server/attestapi"
	"github.com/keywarden/keywarden/store"
)

const attestUsage = `attest: want one of
  attest verify  --url URL --policy FILE [--ak-name HEX] [--bind hpke|tls] [--ek-roots PEMFILE] [--ca PEMFILE]
  attest policy  [--url URL] [--ak-name HEX] [--ca PEMFILE]
  attest ak-name [--url URL] [--ca PEMFILE]
  attest new-ak  [-config FILE] [--force]`

func cmdAttest(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError(attestUsage)
	}
	switch args[0] {
	case "verify":
		return attestVerify(ctx, args[1:], os.Stdout, os.Stderr)
	case "policy":
		return attestPolicy(ctx, args[1:], os.Stdout, os.Stderr)
	case "ak-name":
		return attestAKName(ctx, args[1:], os.Stdout, os.Stderr)
	case "new-ak":
		return attestNewAK(ctx, args[1:], os.Stderr)
	}
	return usageError(attestUsage)
}

// attestFlags are the flags every network subcommand shares.
type attestFlags struct {
	url, ca string
}

func (f *attestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", envOr("KEYWARDEN_URL", "http://127.0.0.1:8420"), "the appliance's public listener, https://host[:port] (env KEYWARDEN_URL)")
	fs.StringVar(&f.ca, "ca", "", "PEM file of the CA that issued the appliance's TLS certificate (default: the system's roots)")
}

// client builds the attestation client for the flags.
func (f *attestFlags) client() (*attestapi.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", f.ca)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &attestapi.Client{BaseURL: f.url, HTTP: &http.Client{Transport: tr, Timeout: attestapi.DefaultTimeout}}, nil
}

// parseAKName reads a pinned attestation key Name: hex (colons and a 0x
// prefix allowed), 34 bytes (the SHA-256 algorithm id and a digest).
func parseAKName(s string) ([]byte, error) {
	s = strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(s), "0x"), ":", "")
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 2+sha256.Size || b[0] != 0x00 || b[1] != 0x0b {
		return nil, errors.New("--ak-name: want the 68 hex digits `keywarden init` printed (000b…)")
	}
	return b, nil
}

const unpinnedWarning = `WARNING: no --ak-name given: the attestation key is NOT pinned.
WARNING: The checks then show only that the evidence is consistent and signed by the key it
WARNING: carries, NOT that this key lives in a TPM: anyone can make such evidence in software.
WARNING: Pin the name printed by ` + "`keywarden init`" + ` (or learnt through enrollment).
`

func attestVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("attest verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f attestFlags
	f.register(fs)
	policyFile := fs.String("policy", "", "policy file (YAML or JSON) of allowed PCR values; required")
	akName := fs.String("ak-name", "", "the attestation key's Name (hex) to pin; strongly recommended")
	bind := fs.String("bind", "hpke", "which key the quote must bind: hpke (the appliance's published HPKE key) or tls (the key of this TLS connection)")
	ekRoots := fs.String("ek-roots", "", "PEM file of TPM makers' root CAs; require an EK certificate chaining to one")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("attest verify: unexpected argument " + fs.Arg(0))
	}
	if *policyFile == "" {
		return usageError("attest verify: --policy FILE is required (start from `keywarden attest policy`)")
	}
	var opts attestapi.CheckOptions
	var err error
	if opts.Bind, err = attestapi.ParseBind(*bind); err != nil {
		return usageError("attest verify: --bind must be hpke or tls")
	}
	if *akName != "" {
		if opts.AKName, err = parseAKName(*akName); err != nil {
			return usageError(err.Error())
		}
	}
	raw, err := os.ReadFile(*policyFile)
	if err != nil {
		return fmt.Errorf("attest verify: %w", err)
	}
	if opts.Policy, err = attest.ParsePolicy(raw); err != nil {
		return fmt.Errorf("attest verify: policy %s: %w", *policyFile, err)
	}
	if opts.AKName == nil {
		fmt.Fprint(stderr, unpinnedWarning)
	}
	if *ekRoots != "" {
		pem, err := os.ReadFile(*ekRoots)
		if err != nil {
			return fmt.Errorf("attest verify: --ek-roots: %w", err)
		}
		opts.EKRoots = x509.NewCertPool()
		if !opts.EKRoots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("attest verify: --ek-roots %s: no PEM certificate in it", *ekRoots)
		}
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	res, err := c.Check(ctx, opts)
	if err != nil {
		var ve *attest.VerifyError
		if errors.As(err, &ve) {
			fmt.Fprintf(stdout, "REFUSED: %s\n  %s\n", ve.Reason, ve.Error())
			return fmt.Errorf("attest verify: %s refused (%s): %w", f.url, ve.Reason, err)
		}
		return fmt.Errorf("attest verify: %w", err)
	}
	printFacts(stdout, f.url, res)
	return nil
}

// printFacts prints what a passed check established, and what it did not.
func printFacts(w io.Writer, url string, res *attestapi.Result) {
	fa := res.Facts
	fmt.Fprintf(w, "VERIFIED: %s\n", url)
	pin := "NOT PINNED (consistent evidence only; see the warning)"
	if fa.AKPinned {
		pin = "pinned"
	}
	fmt.Fprintf(w, "  attestation key  %x  %s\n", fa.AKName, pin)
	kh := sha256.Sum256(fa.BoundKey)
	switch res.Bind {
	case attestapi.BindTLS:
		fmt.Fprintf(w, "  bound key        TLS key of this connection, SHA-256(SPKI) %x\n", kh)
	default:
		fmt.Fprintf(w, "  bound key        HPKE %s, SHA-256 %x (seal to this key only)\n", res.Suite, kh)
	}
	idx := make([]int, 0, len(fa.PCRs))
	for i := range fa.PCRs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		fmt.Fprintf(w, "  PCR %-2d (sha256)  %x\n", i, fa.PCRs[i])
	}
	fmt.Fprintf(w, "  TPM              resets %d, restarts %d, clock safe %v, firmware %#x\n", fa.ResetCount, fa.RestartCount, fa.Safe, fa.FirmwareVersion)
	if fa.EKCertificate != nil {
		fmt.Fprintf(w, "  EK certificate   %s, issued by %s\n", fa.EKCertificate.Subject, fa.EKCertificate.Issuer)
	} else {
		fmt.Fprintf(w, "  EK certificate   not checked (no --ek-roots; %d present)\n", len(res.Evidence.EKCertificates))
	}
	fmt.Fprintf(w, "  reported version %s (informational)\n", orDash(fa.ReportedVersion))
	fmt.Fprintf(w, "  reported binary  sha256 %s (informational unless the boot measured it into a pinned PCR)\n", orDash(fa.ReportedBinaryDigest))
	if len(fa.EventLog) > 0 {
		fmt.Fprintf(w, "  event log        %d bytes (not replayed)\n", len(fa.EventLog))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fetchSelfConsistent fetches evidence for a fresh nonce and checks
// everything but the PCR values' expectations: the signature, the nonce,
// the PCR digest, and the pin when one is given. It is what `attest
// policy` and `attest ak-name` stand on.
func fetchSelfConsistent(ctx context.Context, c *attestapi.Client, akName []byte) (*attest.Evidence, *attest.Facts, error) {
	nonce := attestapi.NewNonce()
	ev, _, err := c.Evidence(ctx, nonce, attestapi.BindHPKE)
	if err != nil {
		return nil, nil, err
	}
	own, err := attest.PolicyFromPCRs(ev.PCRs)
	if err != nil {
		return nil, nil, fmt.Errorf("the evidence has no usable PCR values: %w", err)
	}
	facts, err := attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, Policy: own, AKName: akName})
	if err != nil {
		return nil, nil, err
	}
	return ev, facts, nil
}

func attestPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("attest policy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f attestFlags
	f.register(fs)
	akName := fs.String("ak-name", "", "the attestation key's Name (hex) to pin while fetching")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("attest policy: unexpected argument " + fs.Arg(0))
	}
	var pin []byte
	var err error
	if *akName != "" {
		if pin, err = parseAKName(*akName); err != nil {
			return usageError(err.Error())
		}
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	_, facts, err := fetchSelfConsistent(ctx, c, pin)
	if err != nil {
		return fmt.Errorf("attest policy: %w", err)
	}
	p, err := attest.PolicyFromPCRs(facts.PCRs)
	if err != nil {
		return fmt.Errorf("attest policy: %w", err)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return fmt.Errorf("attest policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("attest policy: %w", err)
	}
	pinned := "not pinned"
	if facts.AKPinned {
		pinned = "pinned"
	}
	fmt.Fprintf(stdout, "# Starting policy for `keywarden attest verify`, from %s at %s.\n", f.url, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "# Attestation key %x (%s).\n", facts.AKName, pinned)
	fmt.Fprintln(stdout, "# These are the values the appliance has NOW. Check them against what your image and")
	fmt.Fprintln(stdout, "# firmware should measure before trusting them; add the values after a planned update.")
	_, err = stdout.Write(out.Bytes())
	return err
}

func attestAKName(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("attest ak-name", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f attestFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("attest ak-name: unexpected argument " + fs.Arg(0))
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	_, facts, err := fetchSelfConsistent(ctx, c, nil)
	if err != nil {
		return fmt.Errorf("attest ak-name: %w", err)
	}
	fmt.Fprintln(stderr, "WARNING: this name comes from the appliance itself, over the network: pinning it is trust on")
	fmt.Fprintln(stderr, "WARNING: first use. Compare it with the name `keywarden init` printed on the appliance's")
	fmt.Fprintln(stderr, "WARNING: console (or establish it through EK enrollment) before relying on it.")
	fmt.Fprintf(stdout, "%x\n", facts.AKName)
	return nil
}

// attestNewAK replaces the attestation key, for a TPM that was cleared or
// replaced. The server must be stopped (the store is locked while it runs).
func attestNewAK(ctx context.Context, args []string, stderr io.Writer) error {
	force := false
	rest := args[:0:0]
	for _, a := range args {
		if a == "-force" || a == "--force" {
			force = true
			continue
		}
		rest = append(rest, a)
	}
	cfg, _, err := loadConfig(rest, os.Getenv("KEYWARDEN_DEV") == "1")
	if err != nil {
		return err
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return err
	}
	defer tpm.Close()
	db, err := openStoreDB(ctx, cfg, store.Options{Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("attest new-ak: %w (stop the server first)", err)
	}
	defer db.Close()
	if blob, err := readAKBlob(ctx, db); err == nil && blob != nil && !force {
		if ak, err := attest.LoadAK(ctx, tpm, blob); err == nil {
			_ = ak.Close()
			return errors.New("attest new-ak: the stored attestation key loads in this TPM; keep it (verifiers pinned its name) or pass --force")
		}
	}
	blob, err := newAKBlob(ctx, tpm, db)
	if err != nil {
		return fmt.Errorf("attest new-ak: %w", err)
	}
	fmt.Fprintln(stderr, "verifiers that pinned the previous attestation key must pin the new name")
	return printAKName(stderr, blob, true)
}
