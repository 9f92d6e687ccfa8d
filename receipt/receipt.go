// Package receipt is Keywarden's release receipts: compact statements,
// signed by the appliance, that a key was released, which anyone can check
// offline with public keys only. It has no dependency beyond the standard
// library, so a wallet backend or an auditor can import it alone.
//
// # Chain of keys
//
//	attestation key (AK, in the TPM; trusted after `keywarden attest verify`)
//	└── TPM2_Certify → appliance signing key (ECDSA P-256, in the TPM, fixedTPM)
//	    └── KeyCert (one TPM signature at start) → batch key (Ed25519, in memory)
//	        ├── signs each audit batch's Merkle root (receipts)
//	        └── signs each audit anchor (public audit verification)
//
// The batch key lives only in the running process and is made again at
// every start, so a release costs no TPM command: the TPM signs once, at
// start, the certificate of the batch key ([KeyCert]). A verifier trusts
// the appliance signing key (its public key, from GET /v1/appliance-keys
// checked against the AK with attest.VerifyCertification, or pinned), then
// [Verify] checks the certificate, the batch signature and the Merkle path.
//
// # A receipt
//
// A [Statement] says what the audit line at Seq records (action, owner
// hash, method, key version, time, request id) and carries the SHA-256 of
// that very line, so a receipt can be matched with the audit log
// ([MatchLine]). Statements of one audit batch (one group commit) are the
// leaves of an RFC 6962 Merkle tree whose root the batch key signs with
// the batch's seq range ([Batch]). A receipt is the statement, its path,
// the signed batch and the batch key's certificate; on the wire it is
// base64url (no padding) of its JSON ([Receipt.Encode]), in the HTTP
// header Keywarden-Receipt of a release.
//
// # Owner hash
//
// The owner appears as SHA-256("keywarden-receipt-owner-v1\x00" ‖ salt ‖
// owner id), with 16 random bytes of salt per receipt, carried in it. The
// owner (who knows their own id) can check it ([Statement.IsOwner]);
// someone who finds receipts cannot link two of them to one owner or test
// a dictionary of ids against many receipts at once.
package receipt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Domain strings: each signature and hash says what it is for.
const (
	certDomain   = "keywarden-batch-key-cert-v1\x00"
	batchDomain  = "keywarden-receipt-batch-v1\x00"
	leafDomain   = "keywarden-receipt-leaf-v1\x00"
	ownerDomain  = "keywarden-receipt-owner-v1\x00"
	anchorDomain = "keywarden-audit-anchor-sig-v2\x00"

	// Version is the version of the JSON receipt format and of the batch
	// key certificate; [VersionCompact] is the compact binary encoding of
	// the same receipt.
	Version = 1
	// Header is the HTTP response header of a release carrying its receipt.
	Header = "Keywarden-Receipt"
	// MaxEncoded bounds an encoded receipt accepted by [Parse].
	MaxEncoded = 16 << 10
)

// Errors. Every verification failure wraps ErrInvalid.
var (
	ErrInvalid = errors.New("receipt: does not verify")
	// ErrUntrusted: the batch key's certificate is signed by none of the
	// trusted appliance keys (another appliance, another TPM).
	ErrUntrusted = fmt.Errorf("%w: batch key not certified by a trusted appliance key", ErrInvalid)
	// ErrBackdated: the statement or batch is dated before its batch key
	// was issued (see [KeyCert.NotBefore]).
	ErrBackdated = fmt.Errorf("%w: dated before its batch key", ErrInvalid)
)

var b64 = base64.RawURLEncoding

// KeyCert is the certificate of a batch key, signed at start by the
// appliance signing key in the TPM.
type KeyCert struct {
	V      int    `json:"v"`
	Node   string `json:"node,omitempty"` // the cluster node name; empty outside a cluster
	Alg    string `json:"alg"`            // "ed25519"
	Pub    string `json:"pub"`            // base64url public key
	Issued string `json:"issued"`         // RFC 3339: when the process started
	Signer string `json:"signer"`         // hex SHA-256 of the signing key's SubjectPublicKeyInfo DER
	Sig    string `json:"sig,omitempty"`  // base64url ASN.1 ECDSA-P256-SHA256 over certDomain ‖ JSON without sig
}

func (c KeyCert) digest() []byte {
	c.Sig = ""
	body, _ := json.Marshal(c) // plain fields: cannot fail
	h := sha256.New()
	h.Write([]byte(certDomain))
	h.Write(body)
	return h.Sum(nil)
}

// KeyID is hex SHA-256 of a public key's SubjectPublicKeyInfo DER, the
// form KeyCert.Signer names it by.
func KeyID(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// Verify checks the certificate against the trusted appliance signing keys
// and returns the batch key it certifies.
func (c KeyCert) Verify(trusted []*ecdsa.PublicKey) (ed25519.PublicKey, error) {
	if c.V != Version || c.Alg != "ed25519" {
		return nil, fmt.Errorf("%w: batch key certificate version %d, algorithm %q", ErrInvalid, c.V, c.Alg)
	}
	pub, err := b64.DecodeString(c.Pub)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: batch key is not an Ed25519 public key", ErrInvalid)
	}
	if _, err := time.Parse(time.RFC3339Nano, c.Issued); err != nil {
		return nil, fmt.Errorf("%w: batch key certificate time", ErrInvalid)
	}
	sig, err := b64.DecodeString(c.Sig)
	if err != nil {
		return nil, fmt.Errorf("%w: batch key certificate signature is not base64url", ErrInvalid)
	}
	d := c.digest()
	for _, k := range trusted {
		if k != nil && KeyID(k) == c.Signer && ecdsa.VerifyASN1(k, d, sig) {
			return ed25519.PublicKey(pub), nil
		}
	}
	return nil, ErrUntrusted
}

// NotBefore checks that ts (RFC 3339) is not earlier than the batch key's
// issue time. The batch key exists only in the memory of the process that
// certified it at start, so nothing it signs can honestly be dated before
// then: a date before Issued is a backdated statement made by someone who
// took the key from memory. Call it after [KeyCert.Verify].
func (c KeyCert) NotBefore(what, ts string) error {
	issued, err := time.Parse(time.RFC3339Nano, c.Issued)
	if err != nil {
		return fmt.Errorf("%w: batch key certificate time", ErrInvalid)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fmt.Errorf("%w: %s time %q is not RFC 3339", ErrInvalid, what, ts)
	}
	if t.Before(issued) {
		return fmt.Errorf("%w: %s dated %s, before its batch key was issued (%s)", ErrBackdated, what, ts, c.Issued)
	}
	return nil
}

// BatchKey is the in-memory key that signs batch roots and anchors, with
// its certificate.
type BatchKey struct {
	priv     ed25519.PrivateKey
	cert     KeyCert
	certJSON []byte
}

// NewBatchKey makes a batch key and has signer (the appliance signing key
// in the TPM: one TPM command) certify it. node is the cluster node name,
// empty outside a cluster.
func NewBatchKey(node string, now time.Time, signer crypto.Signer) (*BatchKey, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("receipt: the signing key must be ECDSA")
	}
	bpub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	c := KeyCert{V: Version, Node: node, Alg: "ed25519", Pub: b64.EncodeToString(bpub),
		Issued: now.UTC().Format(time.RFC3339Nano), Signer: KeyID(pub)}
	sig, err := signer.Sign(rand.Reader, c.digest(), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("receipt: certify the batch key: %w", err)
	}
	c.Sig = b64.EncodeToString(sig)
	if _, err := c.Verify([]*ecdsa.PublicKey{pub}); err != nil {
		return nil, fmt.Errorf("receipt: the signing key's certificate does not verify: %w", err)
	}
	cj, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return &BatchKey{priv: priv, cert: c, certJSON: cj}, nil
}

// Cert returns the batch key's certificate.
func (k *BatchKey) Cert() KeyCert { return k.cert }

// Node is the node name the key was certified for.
func (k *BatchKey) Node() string { return k.cert.Node }

// SignAnchor signs an audit anchor line (everything before its signature).
func (k *BatchKey) SignAnchor(line []byte) []byte {
	return ed25519.Sign(k.priv, append([]byte(anchorDomain), line...))
}

// VerifyAnchor checks an anchor signature made by [BatchKey.SignAnchor].
func VerifyAnchor(batchKey ed25519.PublicKey, line, sig []byte) bool {
	return len(sig) == ed25519.SignatureSize && ed25519.Verify(batchKey, append([]byte(anchorDomain), line...), sig)
}

// AnchorSigSize is the length of an anchor signature.
const AnchorSigSize = ed25519.SignatureSize

// Statement is what a receipt states: the audit line at Seq.
type Statement struct {
	Node       string `json:"node,omitempty"`
	Seq        uint64 `json:"seq"`
	Line       string `json:"line"` // hex SHA-256 of the audit line (its chain hash)
	Time       string `json:"time"`
	Action     string `json:"action"`
	Outcome    string `json:"outcome"`
	OwnerHash  string `json:"owner_hash"` // base64url SHA-256(ownerDomain ‖ salt ‖ owner)
	Salt       string `json:"salt"`       // base64url, 16 bytes
	Method     string `json:"method,omitempty"`
	KeyVersion string `json:"key_version,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
}

// NewOwnerHash returns a fresh salt and the owner's hash under it.
func NewOwnerHash(owner string) (hash, salt string) {
	var s [SaltSize]byte
	_, _ = io.ReadFull(rand.Reader, s[:]) // crypto/rand does not fail
	return ownerHash(owner, s[:]), b64.EncodeToString(s[:])
}

func ownerHash(owner string, salt []byte) string {
	sum := hashOwner(owner, salt)
	return b64.EncodeToString(sum[:])
}

func hashOwner(owner string, salt []byte) [sha256.Size]byte {
	// One buffer on the stack for the usual sizes (a release's owner hash
	// is made on the release path).
	var buf [256]byte
	b := append(append(append(buf[:0], ownerDomain...), salt...), owner...)
	return sha256.Sum256(b)
}

// IsOwner reports whether the statement is about owner (the owner id as
// the audit log writes it, e.g. "firebase:<project>/<tenant>/<uid>").
func (s Statement) IsOwner(owner string) bool {
	salt, err := b64.DecodeString(s.Salt)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(ownerHash(owner, salt)), []byte(s.OwnerHash)) == 1
}

// Leaf is the statement's Merkle leaf hash: [HashLeaf] of leafDomain, the
// seq (8 bytes, big-endian), then each string field (node, line, time,
// action, outcome, owner hash, salt, method, key version, request id) with
// a 4-byte big-endian length. A binary form: it is hashed for every
// release, and a fixed field order needs no JSON canonicalisation.
func (s Statement) Leaf() [sha256.Size]byte {
	var buf [512]byte       // on the stack for the usual sizes: a leaf is hashed for every release
	b := append(buf[:0], 0) // HashLeaf's prefix
	b = append(b, leafDomain...)
	b = binary.BigEndian.AppendUint64(b, s.Seq)
	for _, f := range [...]string{s.Node, s.Line, s.Time, s.Action, s.Outcome, s.OwnerHash, s.Salt, s.Method, s.KeyVersion, s.RequestID} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return sha256.Sum256(b)
}

// Batch is what the batch key signs once per audit group commit: the seq
// range of the batch's lines and the Merkle root of its statements.
type Batch struct {
	Node  string `json:"node,omitempty"`
	First uint64 `json:"first"` // seq of the batch's first line
	Last  uint64 `json:"last"`  // seq of its last line
	Size  int    `json:"size"`  // statements (leaves)
	Root  string `json:"root"`  // hex Merkle root
	Time  string `json:"time"`
}

func (b Batch) message() []byte {
	body, _ := json.Marshal(b)
	return append([]byte(batchDomain), body...)
}

// SignBatch signs a batch.
func (k *BatchKey) SignBatch(b Batch) string {
	return b64.EncodeToString(ed25519.Sign(k.priv, b.message()))
}

// Receipt is one release receipt.
type Receipt struct {
	V         int       `json:"v"`
	Statement Statement `json:"stmt"`
	Index     int       `json:"index"` // the statement's leaf index in the batch
	Path      []string  `json:"path"`  // hex sibling hashes, leaf to root
	Batch     Batch     `json:"batch"`
	BatchSig  string    `json:"batch_sig"` // base64url Ed25519 over batchDomain ‖ JSON(batch)
	Cert      KeyCert   `json:"cert"`
}

// Encode returns the receipt's wire form, the value of the
// Keywarden-Receipt header: for version 1, base64url (no padding) of its
// JSON; for version 2 ([VersionCompact]), base64url of its compact binary
// encoding (see compact.go), or of its JSON as version 1 when a field does
// not fit that encoding.
func (r *Receipt) Encode() string {
	if r.V == VersionCompact {
		if raw, err := encodeCompact(r); err == nil {
			return b64.EncodeToString(raw)
		}
		v1 := *r
		v1.V = Version
		r = &v1
	}
	b, _ := json.Marshal(r)
	return b64.EncodeToString(b)
}

// JSON returns the receipt's JSON (version 1, whatever its encoding): the
// readable form, which verifies as the receipt does (the version names
// only the encoding; nothing signed depends on it).
func (r *Receipt) JSON() []byte {
	v1 := *r
	v1.V = Version
	b, _ := json.Marshal(&v1)
	return b
}

// Parse reads an encoded receipt: the header value (base64url of the
// version 1 JSON or of the version 2 compact encoding), or its JSON. A
// JSON receipt must be version 1.
func Parse(s string) (*Receipt, error) {
	if len(s) > MaxEncoded {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxEncoded)
	}
	var raw []byte
	if len(s) > 0 && s[0] == '{' {
		raw = []byte(s)
	} else {
		var err error
		if raw, err = b64.DecodeString(s); err != nil {
			return nil, fmt.Errorf("%w: not base64url: %v", ErrInvalid, err)
		}
	}
	if len(raw) > 0 && raw[0] == VersionCompact {
		return decodeCompact(raw)
	}
	var r Receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: not a receipt: %v", ErrInvalid, err)
	}
	if r.V != Version {
		return nil, fmt.Errorf("%w: unknown receipt version", ErrInvalid)
	}
	return &r, nil
}

// Verify checks r with the trusted appliance signing keys: the batch key's
// certificate, the batch signature, the Merkle path from the statement to
// the signed root, that the statement lies in the batch's range on the
// same node, and that neither the statement nor the batch is dated before
// the batch key was issued ([ErrBackdated]: whoever takes a batch key from
// a running process cannot make receipts for the past). It returns nil
// only when all hold; then r.Statement is what the appliance states.
func Verify(r *Receipt, trusted ...*ecdsa.PublicKey) error {
	if r == nil || (r.V != Version && r.V != VersionCompact) {
		return fmt.Errorf("%w: unknown receipt version", ErrInvalid)
	}
	bk, err := r.Cert.Verify(trusted)
	if err != nil {
		return err
	}
	sig, err := b64.DecodeString(r.BatchSig)
	if err != nil || !ed25519.Verify(bk, r.Batch.message(), sig) {
		return fmt.Errorf("%w: the batch signature does not verify", ErrInvalid)
	}
	s := r.Statement
	if s.Node != r.Batch.Node || r.Cert.Node != r.Batch.Node {
		return fmt.Errorf("%w: node names differ", ErrInvalid)
	}
	if err := r.Cert.NotBefore("batch", r.Batch.Time); err != nil {
		return err
	}
	if err := r.Cert.NotBefore("statement", s.Time); err != nil {
		return err
	}
	if s.Seq < r.Batch.First || s.Seq > r.Batch.Last {
		return fmt.Errorf("%w: seq %d outside the batch %d–%d", ErrInvalid, s.Seq, r.Batch.First, r.Batch.Last)
	}
	path := make([][sha256.Size]byte, len(r.Path))
	for i, p := range r.Path {
		if len(p) != 2*sha256.Size {
			return fmt.Errorf("%w: path element %d", ErrInvalid, i)
		}
		if _, err := hex.Decode(path[i][:], []byte(p)); err != nil {
			return fmt.Errorf("%w: path element %d", ErrInvalid, i)
		}
	}
	root, err := rootFromPath(s.Leaf(), r.Index, r.Batch.Size, path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if hex.EncodeToString(root[:]) != r.Batch.Root {
		return fmt.Errorf("%w: %v", ErrInvalid, errBadPath)
	}
	return nil
}

// MatchLine checks that line (one audit line, without its newline) is the
// one r states: same hash, and its seq, time, action, outcome, owner,
// method, key version and request id are the statement's. Verify r first.
func MatchLine(r *Receipt, line []byte) error {
	s := r.Statement
	sum := sha256.Sum256(line)
	if hex.EncodeToString(sum[:]) != s.Line {
		return fmt.Errorf("%w: the audit line's hash is not the receipt's", ErrInvalid)
	}
	var l struct {
		Seq       uint64            `json:"seq"`
		Time      string            `json:"time"`
		Action    string            `json:"action"`
		Outcome   string            `json:"outcome"`
		Owner     string            `json:"owner"`
		Method    string            `json:"method"`
		RequestID string            `json:"request_id"`
		Fields    map[string]string `json:"fields"`
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return fmt.Errorf("%w: audit line: %v", ErrInvalid, err)
	}
	switch {
	case l.Seq != s.Seq, l.Time != s.Time, l.Action != s.Action, l.Outcome != s.Outcome,
		l.Method != s.Method, l.RequestID != s.RequestID, l.Fields[FieldKeyVersion] != s.KeyVersion:
		return fmt.Errorf("%w: the audit line says otherwise", ErrInvalid)
	case !s.IsOwner(l.Owner):
		return fmt.Errorf("%w: the audit line's owner is not the receipt's", ErrInvalid)
	}
	return nil
}

// FieldKeyVersion is the audit line field a statement's key version comes
// from.
const FieldKeyVersion = "key_version"

// Builder makes the receipts of one batch: Add each statement (or
// AddEntry its binary form), then Sign.
type Builder struct {
	entries []Entry
}

// Add queues a statement and returns its index.
func (b *Builder) Add(s Statement) int { return b.AddEntry(entryOf(s)) }

// AddEntry queues a statement in binary form and returns its index.
func (b *Builder) AddEntry(e Entry) int { b.entries = append(b.entries, e); return len(b.entries) - 1 }

// Grow makes room for n more statements.
func (b *Builder) Grow(n int) { b.entries = slices.Grow(b.entries, n) }

// Len is the number of statements queued.
func (b *Builder) Len() int { return len(b.entries) }

// Sign signs the batch [first, last] (one Ed25519 signature) and returns
// it; each statement's receipt is then [Signed.Receipt], which its own
// caller can build (the paths cost nothing to the signer).
func (b *Builder) Sign(k *BatchKey, first, last uint64, now time.Time) *Signed {
	if len(b.entries) == 0 {
		return nil
	}
	leaves := make([][sha256.Size]byte, len(b.entries))
	for i := range b.entries {
		leaves[i] = b.entries[i].leaf()
	}
	lv := levels(leaves)
	root := lv[len(lv)-1][0]
	batch := Batch{Node: k.cert.Node, First: first, Last: last, Size: len(leaves),
		Root: hex.EncodeToString(root[:]), Time: now.UTC().Format(time.RFC3339Nano)}
	return &Signed{batch: batch, sig: k.SignBatch(batch), cert: k.cert, certJSON: k.certJSON, entries: b.entries, levels: lv}
}

// Signed is a signed batch of statements.
type Signed struct {
	batch    Batch
	sig      string
	cert     KeyCert
	certJSON []byte
	entries  []Entry
	levels   [][][sha256.Size]byte

	tailOnce sync.Once
	tail     []byte // version 1: ,"batch":…,"batch_sig":…,"cert":…} shared by the batch's receipts

	sharedOnce sync.Once
	shared     []byte // version 2: base64url of the shared part (nil: the batch does not fit it)
}

// Encode is [Receipt.Encode] of the i-th receipt, built for the release
// path: the compact encoding (version 2), whose part every receipt of the
// batch shares (batch, signature, certificate) is encoded once, in
// base64url, and joined with the receipt's own part (statement, path).
func (s *Signed) Encode(i int) string {
	s.sharedOnce.Do(func() {
		if raw, err := appendShared(nil, s.batch, s.sig, s.cert); err == nil {
			s.shared = b64.AppendEncode(nil, raw)
		}
	})
	if s.shared == nil {
		return s.encodeV1(i)
	}
	bufs := encodeBufs.Get().(*[2][]byte)
	defer encodeBufs.Put(bufs)
	var pbuf [24][sha256.Size]byte // on the stack: batches of up to 2^24
	own, err := appendOwnEntry(bufs[0][:0], &s.entries[i], i, appendPathIn(pbuf[:0], s.levels, i))
	if err != nil {
		return s.encodeV1(i)
	}
	enc := b64.AppendEncode(bufs[1][:0], own)
	bufs[0], bufs[1] = own, enc
	var sb strings.Builder
	sb.Grow(len(s.shared) + len(enc))
	sb.Write(s.shared)
	sb.Write(enc)
	return sb.String()
}

// encodeV1 is the version 1 (JSON) encoding of the i-th receipt: the part
// every receipt of the batch shares is encoded once, and the receipt's
// own part is padded with JSON spaces to a multiple of three bytes so
// that the two encodings join.
func (s *Signed) encodeV1(i int) string {
	s.tailOnce.Do(func() {
		bj, _ := json.Marshal(s.batch)
		t := append([]byte(`,"batch":`), bj...)
		t = append(t, `,"batch_sig":"`...)
		t = append(t, s.sig...)
		t = append(t, `","cert":`...)
		t = append(t, s.certJSON...)
		s.tail = b64.AppendEncode(nil, append(t, '}'))
	})
	p := pathIn(s.levels, i)
	bufs := encodeBufs.Get().(*[2][]byte)
	defer encodeBufs.Put(bufs)
	head := bufs[0][:0]
	head = append(head, `{"v":`...)
	head = strconv.AppendInt(head, Version, 10)
	head = append(head, `,"stmt":`...)
	st := s.entries[i].Statement()
	head = st.appendJSON(head)
	head = append(head, `,"index":`...)
	head = strconv.AppendInt(head, int64(i), 10)
	head = append(head, `,"path":[`...)
	for j := range p {
		if j > 0 {
			head = append(head, ',')
		}
		head = append(head, '"')
		head = hex.AppendEncode(head, p[j][:])
		head = append(head, '"')
	}
	head = append(head, ']')
	for len(head)%3 != 0 {
		head = append(head, ' ')
	}
	enc := b64.AppendEncode(bufs[1][:0], head)
	bufs[0], bufs[1] = head, enc
	var sb strings.Builder
	sb.Grow(len(enc) + len(s.tail))
	sb.Write(enc)
	sb.Write(s.tail)
	return sb.String()
}

// encodeBufs are the scratch buffers of [Signed.Encode].
var encodeBufs = sync.Pool{New: func() any { return new([2][]byte) }}

// appendJSON appends the statement as JSON (the fields of its struct tags,
// in order), without reflection.
func (s *Statement) appendJSON(b []byte) []byte {
	str := func(b []byte, name, v string, omitEmpty bool) []byte {
		if omitEmpty && v == "" {
			return b
		}
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		return appendJSONString(b, v)
	}
	b = append(b, '{')
	b = str(b, "node", s.Node, true)
	if b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, `"seq":`...)
	b = strconv.AppendUint(b, s.Seq, 10)
	b = str(b, "line", s.Line, false)
	b = str(b, "time", s.Time, false)
	b = str(b, "action", s.Action, false)
	b = str(b, "outcome", s.Outcome, false)
	b = str(b, "owner_hash", s.OwnerHash, false)
	b = str(b, "salt", s.Salt, false)
	b = str(b, "method", s.Method, true)
	b = str(b, "key_version", s.KeyVersion, true)
	b = str(b, "request_id", s.RequestID, true)
	return append(b, '}')
}

// appendJSONString appends v as a JSON string; invalid UTF-8 goes through
// encoding/json (which replaces it), as json.Marshal would.
func appendJSONString(b []byte, v string) []byte {
	if !utf8.ValidString(v) {
		j, _ := json.Marshal(v)
		return append(b, j...)
	}
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	plain := true
	for i := 0; i < len(v) && plain; i++ {
		plain = v[i] >= 0x20 && v[i] != '"' && v[i] != '\\'
	}
	if plain { // the usual case: nothing to escape
		b = append(b, v...)
		return append(b, '"')
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// Receipt is the receipt of the i-th statement added.
func (s *Signed) Receipt(i int) *Receipt {
	p := pathIn(s.levels, i)
	hp := make([]string, len(p))
	for j := range p {
		hp[j] = hex.EncodeToString(p[j][:])
	}
	return &Receipt{V: VersionCompact, Statement: s.entries[i].Statement(), Index: i, Path: hp, Batch: s.batch, BatchSig: s.sig, Cert: s.cert}
}
