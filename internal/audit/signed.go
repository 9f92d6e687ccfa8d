package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/keywarden/keywarden/receipt"
)

// ErrNotSigned: no signed anchor covers any line of the log (a log written
// before anchors were signed, or by a writer without [Options.Signer]).
var ErrNotSigned = errors.New("audit: no signed anchor")

// ErrMissingStart: with [SignedOptions.FromStart], the log does not start
// at genesis (seq 1): its first files are missing.
var ErrMissingStart = errors.New("audit: the log does not start at genesis")

// KindMissingStart is the break of a log whose first line is not seq 1
// when [SignedOptions.FromStart] asks for the whole log.
const KindMissingStart = "missing_start"

// SignedOptions tune [VerifySigned].
type SignedOptions struct {
	// Complete requires the log to end with a signed anchor.
	Complete bool
	// FromStart requires the log to start at genesis (seq 1, zero prev):
	// a copy missing its first files (removed for retention, or by
	// someone) fails with [ErrMissingStart]. Without it such a log is
	// checked from its first line and Report.Genesis is false.
	FromStart bool
}

// SignedReport is what [VerifySigned] found.
type SignedReport struct {
	Report
	// FirstTime is the time of the first line; SignedThrough that of the
	// last signed anchor, which authenticates every line up to it.
	FirstTime, SignedThrough string
	// Unsigned counts the lines after the last signed anchor: hash-chained
	// but not yet signed (a live log signs them at its next anchor).
	Unsigned int
	// Partial: the last line is incomplete (being written right now).
	Partial bool
	// Nodes are the node names of the signed anchors.
	Nodes []string
}

// VerifySigned checks an audit log with public keys only: no anchor key,
// no TPM, no store. paths is an audit directory, or audit files (copies, a
// SIEM's extract) read in the order of their names' numbers. trusted are
// the appliance signing keys (from GET /v1/appliance-keys, checked against
// the AK). It checks every line as [Verify] does (complete JSON, seq
// contiguous, prev = hash of the line before), and every signed anchor
// (v 2): its batch key certificate verifies under a trusted key and its
// signature over the line verifies under the batch key. Since prev commits
// to every line before it, the last signed anchor authenticates the whole
// log up to itself. HMAC-only anchors (older logs) are ordinary lines here.
//
// It is safe on a live log: the files are only read; a last line being
// written (no newline yet) is reported as Partial, not an error, and lines
// after the last signed anchor are reported as Unsigned (they are signed at
// the next anchor, within the anchor interval). It fails (wrapping
// [ErrBroken]) at the first broken line, named in Report.Broken with its
// file, line number and seq, and with [ErrNotSigned] when no line is
// covered by a signed anchor.
//
// With opts.Complete (a copy of a stopped node's log, which ends with its
// final anchor) a partial last line or unsigned lines at the end fail too,
// wrapping [ErrUnanchored]. A log that does not start at seq 1 (its first
// files removed) verifies from its first line with Report.Genesis false;
// with opts.FromStart it fails, wrapping [ErrMissingStart].
func VerifySigned(paths []string, trusted []*ecdsa.PublicKey, opts SignedOptions) (SignedReport, error) {
	var rep SignedReport
	if len(trusted) == 0 {
		return rep, errors.New("audit: verify: no trusted appliance key")
	}
	files, err := signedInputs(paths)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	if len(files) == 0 {
		return rep, fmt.Errorf("audit: verify: %w: no audit files in %v", ErrBroken, paths)
	}
	pc := &pubCheck{trusted: trusted, certs: map[string]certified{}, nodes: map[string]bool{}}
	c := newChain(nil, &rep.Report)
	c.pub = pc
	var brk *Break
	for i, f := range files {
		rep.Files = append(rep.Files, filepath.Base(f))
		fh, err := os.Open(f)
		if err != nil {
			return rep, fmt.Errorf("audit: verify: %w", err)
		}
		_, brk, err = c.file(filepath.Base(f), fh)
		fh.Close()
		if err != nil {
			return rep, fmt.Errorf("audit: verify: reading %s: %w", f, err)
		}
		if brk != nil {
			if brk.Kind == KindIncomplete && i == len(files)-1 {
				rep.Partial, brk = true, nil
			}
			break
		}
	}
	if brk == nil {
		brk = c.finish(false)
	}
	c.fill()
	rep.FirstTime, rep.SignedThrough, rep.Unsigned = c.firstTime, c.lastAnchorTime, c.sinceAnchor
	for n := range pc.nodes {
		rep.Nodes = append(rep.Nodes, n)
	}
	slices.Sort(rep.Nodes)
	if brk != nil {
		rep.Broken = brk
		return rep, fmt.Errorf("%w: %s", ErrBroken, brk)
	}
	if c.lastAnchor == nil {
		return rep, fmt.Errorf("%w: %d line(s) and none is covered by a signed anchor", ErrNotSigned, c.lines)
	}
	if opts.FromStart && !rep.Genesis {
		rep.Broken = &Break{Position{File: rep.Files[0], Line: 1, Seq: rep.FirstSeq}, KindMissingStart,
			fmt.Sprintf("the log starts at seq %d, not at genesis (seq 1): its first lines are missing", rep.FirstSeq)}
		return rep, fmt.Errorf("%w: %s", ErrMissingStart, rep.Broken)
	}
	if opts.Complete && (rep.Partial || rep.Unsigned > 0) {
		rep.Broken = &Break{c.firstUnanchored, KindUnanchored, fmt.Sprintf("%d line(s) after the last signed anchor at %s (partial last line: %v)", rep.Unsigned, c.lastAnchor, rep.Partial)}
		return rep, fmt.Errorf("%w: %s", ErrUnanchored, rep.Broken)
	}
	return rep, nil
}

// signedInputs lists the files to read: a directory's audit files, or the
// files given, in the order of their numbers when they are named as audit
// files.
func signedInputs(paths []string) ([]string, error) {
	if len(paths) == 1 {
		if fi, err := os.Stat(paths[0]); err == nil && fi.IsDir() {
			fs, err := listFiles(paths[0])
			if err != nil {
				return nil, err
			}
			out := make([]string, len(fs))
			for i, f := range fs {
				out[i] = filepath.Join(paths[0], f.name)
			}
			return out, nil
		}
	}
	out := slices.Clone(paths)
	num := func(p string) int {
		if m := fileNameRE.FindStringSubmatch(filepath.Base(p)); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
		return -1
	}
	slices.SortStableFunc(out, func(a, b string) int { return num(a) - num(b) })
	return out, nil
}

// pubCheck verifies signed anchors with the trusted keys.
type pubCheck struct {
	trusted []*ecdsa.PublicKey
	certs   map[string]certified // verified certificates (as carried) → batch key
	nodes   map[string]bool
}

// certified is a verified batch key certificate and the key it certifies.
type certified struct {
	key  ed25519.PublicKey
	cert receipt.KeyCert
}

// check verifies one anchor line. An anchor with no v, node, cert or sig
// is an HMAC-only anchor: ok, but it counts for nothing. Any other must be
// a valid signed anchor: a byte changed in it never turns it into an
// HMAC-only one unnoticed.
func (p *pubCheck) check(raw []byte, v *verifyLine) (ok, counts bool, why string) {
	body, sig, hasSig := cutSig(raw)
	if v.V == 0 && v.Cert == "" && v.Node == "" && !hasSig && !containsSigMember(raw) {
		return true, false, ""
	}
	switch {
	case v.V != anchorVersionSigned:
		return false, false, fmt.Sprintf("anchor version %d (want %d)", v.V, anchorVersionSigned)
	case !hasSig:
		return false, false, "signed anchor without a well-formed signature"
	}
	ce, ok := p.certs[v.Cert]
	if !ok {
		cb, err := base64.RawURLEncoding.DecodeString(v.Cert)
		if err != nil {
			return false, false, "batch key certificate is not base64url"
		}
		var kc receipt.KeyCert
		if err := json.Unmarshal(cb, &kc); err != nil {
			return false, false, "batch key certificate is not JSON"
		}
		if kc.Node != v.Node {
			return false, false, fmt.Sprintf("batch key certified for node %q, anchor of node %q", kc.Node, v.Node)
		}
		bk, err := kc.Verify(p.trusted)
		if err != nil {
			return false, false, "batch key certificate: " + err.Error()
		}
		ce = certified{key: bk, cert: kc}
		p.certs[v.Cert] = ce
	}
	if !receipt.VerifyAnchor(ce.key, body, sig) {
		return false, false, "anchor signature does not verify"
	}
	// The batch key lives only in the memory of the process that had it
	// certified at start: an anchor dated before that was backdated by
	// someone who took the key.
	if err := ce.cert.NotBefore("anchor", v.Time); err != nil {
		return false, false, err.Error()
	}
	p.nodes[v.Node] = true
	return true, true, ""
}

func containsSigMember(raw []byte) bool {
	return len(raw) > 0 && (json.Valid(raw) && hasKey(raw, "sig"))
}

func hasKey(raw []byte, key string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, ok := m[key]
	return ok
}

// FindLine returns the line with seq in the audit files of paths (a
// directory or files), without its newline.
func FindLine(paths []string, seq uint64) ([]byte, error) {
	files, err := signedInputs(paths)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, line := range bytes.Split(b, []byte{'\n'}) {
			var v struct {
				Seq uint64 `json:"seq"`
			}
			if json.Unmarshal(line, &v) == nil && v.Seq == seq {
				return line, nil
			}
		}
	}
	return nil, fmt.Errorf("audit: no line with seq %d in %v", seq, paths)
}
