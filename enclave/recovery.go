package enclave

// # Recovery shares
//
// At init the root key is split T-of-N with Shamir's secret sharing over
// GF(2^8) and each share is encrypted to one operator's age recipient. Any T
// operators together rebuild the root key on a new host with a new TPM
// (`keywarden recover`); T-1 learn nothing about it. Without this a dead TPM
// loses every user's key.
//
// The plaintext of one share (what age protects) is a small JSON object:
//
//	{"v":1,"root_id":"<hex>","split_id":"<hex>","t":2,"n":3,"x":1,"y":"<base64 of 32 bytes>"}
//
// root_id names the root key (an HMAC under one of its subkeys, see
// [RootID]): shares of another root key, or a forged share, combine to a key
// whose id differs, and [CombineShares] refuses it. split_id names one split:
// a reshare makes a new split of the same root key, and shares of two splits
// do not combine (the error says so instead of producing a wrong key).
//
// A reshare does not revoke earlier shares: they still rebuild the same root
// key. Revoking a share needs a new root key (a new init and a migration of
// every record), which is out of scope here.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// Errors of the recovery path. Callers branch on them with errors.Is.
var (
	// ErrTooFewShares: fewer shares than the threshold were given.
	ErrTooFewShares = errors.New("enclave: not enough recovery shares")
	// ErrSharesMismatch: the shares come from different splits (another
	// init, or before and after a reshare).
	ErrSharesMismatch = errors.New("enclave: the recovery shares do not belong together (another init or another reshare)")
	// ErrDuplicateShare: the same share was given twice.
	ErrDuplicateShare = errors.New("enclave: the same recovery share was given twice")
	// ErrBadShare: a share's plaintext is not a share of this format.
	ErrBadShare = errors.New("enclave: not a keywarden recovery share")
	// ErrShareIdentity: none of the given age identities opens the share.
	ErrShareIdentity = errors.New("enclave: none of the given age identities opens this recovery share")
	// ErrWrongRootKey: the rebuilt key is not the root key the shares or
	// the backup name (a corrupt or forged share, or shares of another
	// appliance).
	ErrWrongRootKey = errors.New("enclave: the rebuilt root key does not match (a share is corrupt or forged, or belongs to another appliance)")
	// ErrNoRecoveryRecord: the store holds no recovery record (made by
	// `keywarden init` or `keywarden recovery reshare`).
	ErrNoRecoveryRecord = errors.New("enclave: the store has no recovery record")
)

// MaxShares is the largest N: share x-coordinates are the non-zero elements
// of GF(2^8).
const MaxShares = 255

const shareVersion = 1

// RecoveryOptions configure [SplitRoot]. Recipients must be set; the zero
// Threshold means a majority (N/2 + 1).
type RecoveryOptions struct {
	// Recipients are the operators' age recipients, one share each:
	// "age1…" (X25519) or "age1pq1…" (hybrid post-quantum). N is their
	// number; a recipient may not appear twice (two shares for one
	// operator would quietly lower the threshold).
	Recipients []string
	// Threshold T is how many shares rebuild the root key, 2 ≤ T ≤ N. Zero
	// means N/2 + 1. T = 1 puts the whole root key in each share and is
	// accepted only with AllowSingleShare and N = 1.
	Threshold int
	// AllowSingleShare accepts N = 1, T = 1: one operator alone can
	// rebuild the root key (a lab or a one-person deployment). It guards
	// against a configuration typo silently giving one person the key.
	AllowSingleShare bool
}

// threshold returns the effective T.
func (o RecoveryOptions) threshold() int {
	if o.Threshold == 0 {
		return len(o.Recipients)/2 + 1
	}
	return o.Threshold
}

// Validate checks the options and parses the recipients. The error names
// the offending recipient by position, never a key.
func (o RecoveryOptions) Validate() error {
	_, err := o.parse()
	return err
}

func (o RecoveryOptions) parse() ([]age.Recipient, error) {
	n := len(o.Recipients)
	if n == 0 {
		return nil, errors.New("enclave: recovery needs at least one age recipient (recovery.recipients)")
	}
	if n > MaxShares {
		return nil, fmt.Errorf("enclave: at most %d recovery recipients", MaxShares)
	}
	t := o.threshold()
	switch {
	case n == 1 && !o.AllowSingleShare:
		return nil, errors.New("enclave: one recovery recipient gives one person the whole root key; add recipients (threshold ≥ 2) or allow a single share explicitly")
	case n == 1 && t != 1:
		return nil, fmt.Errorf("enclave: recovery threshold %d with one recipient", t)
	case n > 1 && (t < 2 || t > n):
		return nil, fmt.Errorf("enclave: recovery threshold %d must be between 2 and the number of recipients (%d)", t, n)
	}
	seen := map[string]bool{}
	out := make([]age.Recipient, 0, n)
	for i, s := range o.Recipients {
		s = strings.TrimSpace(s)
		if seen[s] {
			return nil, fmt.Errorf("enclave: recovery recipient %d appears twice", i+1)
		}
		seen[s] = true
		r, err := parseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("enclave: recovery recipient %d: %w", i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// parseRecipient accepts one age recipient string (X25519 or hybrid).
func parseRecipient(s string) (age.Recipient, error) {
	if strings.ContainsAny(s, "\n\r") || !strings.HasPrefix(s, "age1") {
		return nil, errors.New("not an age recipient (want age1…)")
	}
	rs, err := age.ParseRecipients(strings.NewReader(s))
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// RecoveryShare is one operator's share, encrypted to their age recipient.
// Everything but Armored is public bookkeeping; Armored is safe to store
// and to move around (only the operator's age identity opens it).
type RecoveryShare struct {
	Index     int       `json:"index"` // x-coordinate, 1..N
	Threshold int       `json:"threshold"`
	Total     int       `json:"total"`
	Recipient string    `json:"recipient"`
	RootID    string    `json:"root_id"`
	SplitID   string    `json:"split_id"`
	Created   time.Time `json:"created"`
	Armored   []byte    `json:"armored"` // ASCII-armored age file
}

// FileName is the share's suggested file name: root key id and split id
// prefixes, so a reshare never reuses a name.
func (s RecoveryShare) FileName() string {
	return fmt.Sprintf("keywarden-share-%s-%s-%d-of-%d.age", s.RootID[:min(8, len(s.RootID))], s.SplitID[:min(8, len(s.SplitID))], s.Index, s.Total)
}

// File is the share as an operator keeps it: a few comment lines (ignored
// when reading) followed by the armored age file. `age -d -i KEY` opens it
// after the comments are removed; [DecryptShare] reads it as is.
func (s RecoveryShare) File() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Keywarden recovery share %d of %d (any %d rebuild the root key)\n", s.Index, s.Total, s.Threshold)
	fmt.Fprintf(&b, "# root key id: %s\n# split id:    %s\n# made:        %s\n", s.RootID, s.SplitID, s.Created.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# encrypted to: %s\n", s.Recipient)
	b.Write(s.Armored)
	return b.Bytes()
}

// sharePlain is the plaintext of one share.
type sharePlain struct {
	V       int    `json:"v"`
	RootID  string `json:"root_id"`
	SplitID string `json:"split_id"`
	T       int    `json:"t"`
	N       int    `json:"n"`
	X       int    `json:"x"`
	Y       []byte `json:"y"`
}

// RootID names a root key without revealing it: the first 16 bytes of
// HMAC-SHA256 under the root's "recovery-id" subkey over a fixed string,
// in hex. Shares, backups and the recovery record carry it, so shares of
// another root key are told apart from a damaged one.
func (r *Root) RootID() string {
	k := r.Subkey(SubkeyRecoveryID)
	defer k.Wipe()
	m := hmac.New(sha256.New, k.Reveal())
	m.Write([]byte("keywarden root key id v1"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// RootID is [Root.RootID] of a raw root key.
func RootID(key secret.Bytes) (string, error) {
	r, err := NewRoot(key)
	if err != nil {
		return "", err
	}
	defer r.Close()
	return r.RootID(), nil
}

// SplitRoot splits the raw root key T-of-N and encrypts share i to
// opts.Recipients[i]. It does not wipe raw.
func SplitRoot(raw secret.Bytes, opts RecoveryOptions) ([]RecoveryShare, error) {
	return splitRoot(raw, opts, rand.Reader)
}

func splitRoot(raw secret.Bytes, opts RecoveryOptions, rnd io.Reader) ([]RecoveryShare, error) {
	recips, err := opts.parse()
	if err != nil {
		return nil, err
	}
	if raw.Len() != RootKeySize {
		return nil, fmt.Errorf("enclave: root key is %d bytes, want %d", raw.Len(), RootKeySize)
	}
	rootID, err := RootID(raw)
	if err != nil {
		return nil, err
	}
	var sid [16]byte
	if _, err := io.ReadFull(rnd, sid[:]); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	n, t := len(recips), opts.threshold()
	ys, err := shamirSplit(raw.Reveal(), t, n, rnd)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, y := range ys {
			clear(y)
		}
	}()
	now := time.Now().UTC().Truncate(time.Second)
	out := make([]RecoveryShare, n)
	for i := range n {
		p, err := json.Marshal(sharePlain{V: shareVersion, RootID: rootID, SplitID: hex.EncodeToString(sid[:]), T: t, N: n, X: i + 1, Y: ys[i]})
		if err != nil {
			return nil, err
		}
		armored, err := encryptArmored(p, recips[i])
		clear(p)
		if err != nil {
			return nil, fmt.Errorf("enclave: encrypt recovery share %d: %w", i+1, err)
		}
		out[i] = RecoveryShare{
			Index: i + 1, Threshold: t, Total: n, Recipient: strings.TrimSpace(opts.Recipients[i]),
			RootID: rootID, SplitID: hex.EncodeToString(sid[:]), Created: now, Armored: armored,
		}
	}
	return out, nil
}

func encryptArmored(plaintext []byte, r age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxShareFile bounds what DecryptShare reads.
const maxShareFile = 64 << 10

// DecryptShare opens one share file (as written by [RecoveryShare.File], or
// a bare armored or binary age file) with the operators' identities and
// returns the share's plaintext for [CombineShares].
func DecryptShare(file []byte, identities ...age.Identity) (secret.Bytes, error) {
	if len(file) > maxShareFile {
		return secret.Bytes{}, fmt.Errorf("%w: file larger than %d bytes", ErrBadShare, maxShareFile)
	}
	body := file
	// Skip the comment lines in front of the armor.
	for len(body) > 0 && (body[0] == '#' || body[0] == '\n' || body[0] == '\r') {
		nl := bytes.IndexByte(body, '\n')
		if nl < 0 {
			body = nil
			break
		}
		body = body[nl+1:]
	}
	var src io.Reader = bytes.NewReader(body)
	if bytes.HasPrefix(body, []byte(armor.Header)) {
		src = armor.NewReader(src)
	}
	r, err := age.Decrypt(src, identities...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return secret.Bytes{}, ErrShareIdentity
		}
		return secret.Bytes{}, fmt.Errorf("%w: %v", ErrBadShare, err)
	}
	pt, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		clear(pt)
		return secret.Bytes{}, fmt.Errorf("%w: %v", ErrBadShare, err)
	}
	return secret.NewBytes(pt), nil
}

// ShareInfo is the public part of a decrypted share.
type ShareInfo struct {
	Index, Threshold, Total int
	RootID, SplitID         string
}

// parseShare decodes and checks one share's plaintext. The caller wipes
// the returned Y.
func parseShare(b []byte) (sharePlain, error) {
	var p sharePlain
	if len(b) > 4096 {
		return p, fmt.Errorf("%w: too large", ErrBadShare)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		clear(p.Y)
		return sharePlain{}, fmt.Errorf("%w: %v", ErrBadShare, err)
	}
	switch {
	case p.V != shareVersion:
		clear(p.Y)
		return sharePlain{}, fmt.Errorf("%w: version %d", ErrBadShare, p.V)
	case len(p.Y) != RootKeySize:
		clear(p.Y)
		return sharePlain{}, fmt.Errorf("%w: share value is %d bytes", ErrBadShare, len(p.Y))
	case p.N < 1 || p.N > MaxShares || p.T < 1 || p.T > p.N || p.X < 1 || p.X > p.N:
		clear(p.Y)
		return sharePlain{}, fmt.Errorf("%w: share %d with threshold %d of %d", ErrBadShare, p.X, p.T, p.N)
	case len(p.RootID) != 32 || len(p.SplitID) != 32:
		clear(p.Y)
		return sharePlain{}, fmt.Errorf("%w: bad ids", ErrBadShare)
	}
	return p, nil
}

// InspectShare returns the public part of a decrypted share.
func InspectShare(plain secret.Bytes) (ShareInfo, error) {
	p, err := parseShare(plain.Reveal())
	if err != nil {
		return ShareInfo{}, err
	}
	clear(p.Y)
	return ShareInfo{Index: p.X, Threshold: p.T, Total: p.N, RootID: p.RootID, SplitID: p.SplitID}, nil
}

// CombineShares rebuilds the root key from decrypted shares (the plaintexts
// [DecryptShare] returns). It refuses fewer shares than the threshold,
// shares of different splits, duplicates, and a result whose [RootID] is
// not the one the shares name (a corrupt or forged share). The caller
// should still compare the result with the backup's record
// ([VerifyRecoveredRoot]): a complete set of forged shares names its own
// key. Never panics on any input.
func CombineShares(shares [][]byte) (secret.Bytes, error) {
	if len(shares) == 0 {
		return secret.Bytes{}, fmt.Errorf("%w: none given", ErrTooFewShares)
	}
	if len(shares) > MaxShares {
		return secret.Bytes{}, fmt.Errorf("%w: more than %d shares", ErrBadShare, MaxShares)
	}
	ps := make([]sharePlain, 0, len(shares))
	defer func() {
		for _, p := range ps {
			clear(p.Y)
		}
	}()
	for i, b := range shares {
		p, err := parseShare(b)
		if err != nil {
			return secret.Bytes{}, fmt.Errorf("share %d: %w", i+1, err)
		}
		ps = append(ps, p)
	}
	first := ps[0]
	seen := map[int]bool{}
	for _, p := range ps {
		if p.RootID != first.RootID || p.SplitID != first.SplitID || p.T != first.T || p.N != first.N {
			return secret.Bytes{}, ErrSharesMismatch
		}
		if seen[p.X] {
			return secret.Bytes{}, fmt.Errorf("%w (share %d)", ErrDuplicateShare, p.X)
		}
		seen[p.X] = true
	}
	if len(ps) < first.T {
		return secret.Bytes{}, fmt.Errorf("%w: %d given, %d of %d needed", ErrTooFewShares, len(ps), first.T, first.N)
	}
	xs := make([]byte, len(ps))
	ys := make([][]byte, len(ps))
	for i, p := range ps {
		xs[i], ys[i] = byte(p.X), p.Y
	}
	key, err := shamirCombine(xs, ys)
	if err != nil {
		return secret.Bytes{}, err
	}
	k := secret.NewBytes(key)
	id, err := RootID(k)
	if err != nil {
		k.Wipe()
		return secret.Bytes{}, err
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(first.RootID)) != 1 {
		k.Wipe()
		return secret.Bytes{}, ErrWrongRootKey
	}
	return k, nil
}

// CombineShareFiles rebuilds the root key for `keywarden recover`: it
// decrypts the share files at paths (each with whichever of the operators'
// identities opens it) or, when paths is empty, the shares recorded in
// db's recovery record (a backup carries them; shares none of ids opens are
// another operator's and skipped), and combines them with [CombineShares].
// used lists the numbers of the shares that went in, in the order read.
// Compare the key with the store's record ([VerifyRecoveredRoot]) before
// trusting it. Every decrypted share is wiped before it returns.
func CombineShareFiles(ctx context.Context, db *store.DB, paths []string, ids ...age.Identity) (key secret.Bytes, used []int, err error) {
	var plains []secret.Bytes
	defer func() {
		for _, p := range plains {
			p.Wipe()
		}
	}()
	add := func(p secret.Bytes) error {
		info, err := InspectShare(p)
		if err != nil {
			p.Wipe()
			return err
		}
		plains = append(plains, p)
		used = append(used, info.Index)
		return nil
	}
	if len(paths) > 0 {
		for _, f := range paths {
			b, err := os.ReadFile(f)
			if err != nil {
				return secret.Bytes{}, nil, err
			}
			p, err := DecryptShare(b, ids...)
			if err == nil {
				err = add(p)
			}
			if err != nil {
				return secret.Bytes{}, nil, fmt.Errorf("share %s: %w", f, err)
			}
		}
	} else {
		info, err := LoadRecovery(ctx, db)
		if err != nil {
			return secret.Bytes{}, nil, err
		}
		for _, s := range info.Shares {
			p, err := DecryptShare(s.File(), ids...)
			if errors.Is(err, ErrShareIdentity) {
				continue // another operator's share
			}
			if err != nil {
				return secret.Bytes{}, nil, fmt.Errorf("recorded share %d: %w", s.Index, err)
			}
			if err := add(p); err != nil {
				return secret.Bytes{}, nil, err
			}
		}
	}
	raw := make([][]byte, len(plains))
	for i, p := range plains {
		raw[i] = p.Reveal()
	}
	key, err = CombineShares(raw)
	if err != nil {
		return secret.Bytes{}, nil, err
	}
	return key, used, nil
}

// RecoveryInfo is the recovery record kept in the store's meta bucket: the
// current split's bookkeeping and its encrypted shares, so a backup carries
// them (an operator who lost the share file still has it in every backup;
// only their age identity opens it).
type RecoveryInfo struct {
	Version   int             `json:"v"`
	RootID    string          `json:"root_id"`
	SplitID   string          `json:"split_id"`
	Threshold int             `json:"threshold"`
	Total     int             `json:"total"`
	Created   time.Time       `json:"created"`
	Shares    []RecoveryShare `json:"shares"`
}

// RecordRecovery stores shares (all of one split) as the store's recovery
// record, replacing an earlier one.
func RecordRecovery(ctx context.Context, db *store.DB, shares []RecoveryShare) error {
	if len(shares) == 0 {
		return errors.New("enclave: no recovery shares to record")
	}
	s0 := shares[0]
	for _, s := range shares {
		if s.RootID != s0.RootID || s.SplitID != s0.SplitID {
			return ErrSharesMismatch
		}
	}
	b, err := json.Marshal(RecoveryInfo{Version: 1, RootID: s0.RootID, SplitID: s0.SplitID, Threshold: s0.Threshold, Total: s0.Total, Created: s0.Created, Shares: shares})
	if err != nil {
		return err
	}
	return db.Update(ctx, func(tx *store.Tx) error { return tx.PutMeta(store.MetaRecovery, b) })
}

// LoadRecovery reads the store's recovery record.
func LoadRecovery(ctx context.Context, db *store.DB) (*RecoveryInfo, error) {
	var b []byte
	err := db.View(ctx, func(tx *store.Tx) (err error) { b, err = tx.GetMeta(store.MetaRecovery); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoRecoveryRecord
	}
	if err != nil {
		return nil, err
	}
	var info RecoveryInfo
	if err := json.Unmarshal(b, &info); err != nil || info.Version != 1 || len(info.RootID) != 32 {
		return nil, fmt.Errorf("enclave: the recovery record is damaged")
	}
	return &info, nil
}

// SetupRecovery splits raw (the root key, at init), records the shares in
// db and returns them for the operators. It does not wipe raw.
func SetupRecovery(ctx context.Context, db *store.DB, raw secret.Bytes, opts RecoveryOptions) ([]RecoveryShare, error) {
	shares, err := SplitRoot(raw, opts)
	if err != nil {
		return nil, err
	}
	if err := RecordRecovery(ctx, db, shares); err != nil {
		return nil, err
	}
	return shares, nil
}

// Reshare makes a new split of the unsealed root key for new recipients or
// a new threshold and records it. Earlier shares are not revoked (see the
// section comment at the top of this file).
func Reshare(ctx context.Context, db *store.DB, root *Root, opts RecoveryOptions) ([]RecoveryShare, error) {
	if len(root.key) != RootKeySize {
		return nil, errRootClosed
	}
	raw := secret.CopyBytes(root.key)
	defer raw.Wipe()
	return SetupRecovery(ctx, db, raw, opts)
}

// VerifyRecoveredRoot checks a rebuilt root key against a store (the
// backup being recovered): the recovery record's root id must match, the
// rollback record's MAC must verify, and a stored key record, when there is
// one, must open. Only then is the key resealed to a new TPM.
func VerifyRecoveredRoot(ctx context.Context, db *store.DB, key secret.Bytes) error {
	root, err := NewRoot(key)
	if err != nil {
		return err
	}
	defer root.Close()
	info, err := LoadRecovery(ctx, db)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(root.RootID()), []byte(info.RootID)) != 1 {
		return fmt.Errorf("%w: the backup's root key id is %s", ErrWrongRootKey, info.RootID)
	}
	st, err := loadRollbackState(ctx, db)
	if err != nil {
		return err
	}
	if st != nil && !st.verify(root) {
		return fmt.Errorf("%w: the backup's rollback record does not verify under it", ErrWrongRootKey)
	}
	return openCanary(ctx, db, root)
}

// openCanary opens the first stored key record, if any, with root.
func openCanary(ctx context.Context, db *store.DB, root *Root) error {
	var (
		owner, method string
		sealed        []byte
	)
	errStop := errors.New("stop")
	err := db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketKeys, nil, func(k, v []byte) error {
			o, m, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return nil
			}
			rec, err := decodeKeyRecord(v)
			if err != nil {
				return nil
			}
			owner, method, sealed = string(o), string(m), rec.Sealed
			return errStop
		})
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	if sealed == nil {
		return nil
	}
	pt, err := root.Open(Binding{Kind: "key", Owner: Owner(owner), Method: method}, sealed)
	clear(pt)
	if err != nil {
		return fmt.Errorf("%w: a stored key does not open with it", ErrWrongRootKey)
	}
	return nil
}

// Reseal unseals the root key with the TPM in its current state and seals
// it again to pcrs (none: bound to this TPM only), then checks that the new
// blob unseals. Run it before a firmware or boot-chain update that changes
// the sealed PCRs (reseal to PCRs the update leaves alone, or to none), and
// again afterwards to the PCRs wanted.
func Reseal(ctx context.Context, tpm transport.TPM, db *store.DB, pcrs []int) error {
	sealed, err := LoadSealedRoot(ctx, db)
	if err != nil {
		return err
	}
	key, err := UnsealRoot(ctx, tpm, sealed)
	if err != nil {
		return err
	}
	defer key.Wipe()
	return ResealKey(ctx, tpm, db, key, pcrs)
}

// ResealKey seals key to tpm with pcrs, records it, and checks that the
// recorded blob unseals to the same key (recover uses it on a new TPM).
func ResealKey(ctx context.Context, tpm transport.TPM, db *store.DB, key secret.Bytes, pcrs []int) error {
	if err := StoreRootKey(ctx, tpm, db, key, pcrs); err != nil {
		return err
	}
	sealed, err := LoadSealedRoot(ctx, db)
	if err != nil {
		return err
	}
	back, err := UnsealRoot(ctx, tpm, sealed)
	if err != nil {
		return fmt.Errorf("enclave: the resealed root key does not unseal: %w", err)
	}
	defer back.Wipe()
	if !back.Equal(key) {
		return errors.New("enclave: the resealed root key unseals to other bytes")
	}
	return nil
}

// # Shamir's secret sharing over GF(2^8)
//
// The field is GF(2)[x]/(x^8+x^4+x^3+x+1), AES's. Multiplication and
// inversion run in constant time (no tables indexed by secret bytes). Each
// byte of the secret is the constant term of its own random polynomial of
// degree T-1; share x holds the polynomials' values at x (1..N).

// gfMul multiplies in GF(2^8) without secret-dependent branches or lookups.
func gfMul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		a = (a << 1) ^ (0x1b & -(a >> 7))
		b >>= 1
	}
	return p
}

// gfInv returns a^-1 = a^254 (0 for 0).
func gfInv(a byte) byte {
	r := byte(1)
	x := a
	for range 7 { // a^2 · a^4 · … · a^128 = a^254
		x = gfMul(x, x)
		r = gfMul(r, x)
	}
	return r
}

// shamirSplit returns n shares of secret with threshold t: share i (x =
// i+1) is ys[i], len(secret) bytes.
func shamirSplit(secret []byte, t, n int, rnd io.Reader) ([][]byte, error) {
	if t < 1 || t > n || n > MaxShares || len(secret) == 0 {
		return nil, fmt.Errorf("enclave: shamir: bad parameters t=%d n=%d", t, n)
	}
	ys := make([][]byte, n)
	for i := range ys {
		ys[i] = make([]byte, len(secret))
	}
	coef := make([]byte, t) // coef[0] = secret byte, coef[1..] random
	defer clear(coef)
	for k, s := range secret {
		coef[0] = s
		if _, err := io.ReadFull(rnd, coef[1:]); err != nil {
			return nil, fmt.Errorf("enclave: shamir: %w", err)
		}
		for i := range n {
			x := byte(i + 1)
			var y byte // Horner
			for j := t - 1; j >= 0; j-- {
				y = gfMul(y, x) ^ coef[j]
			}
			ys[i][k] = y
		}
	}
	return ys, nil
}

// shamirCombine interpolates the shares (xs[i], ys[i]) at 0. The xs must be
// distinct and non-zero, the ys of equal length.
func shamirCombine(xs []byte, ys [][]byte) ([]byte, error) {
	if len(xs) == 0 || len(xs) != len(ys) {
		return nil, errors.New("enclave: shamir: no shares")
	}
	size := len(ys[0])
	for i, x := range xs {
		if x == 0 || len(ys[i]) != size {
			return nil, fmt.Errorf("%w: share %d", ErrBadShare, x)
		}
		for _, x2 := range xs[:i] {
			if x == x2 {
				return nil, fmt.Errorf("%w (share %d)", ErrDuplicateShare, x)
			}
		}
	}
	out := make([]byte, size)
	for i, xi := range xs {
		// Lagrange basis at 0: Π_{j≠i} x_j / (x_i + x_j).
		num, den := byte(1), byte(1)
		for j, xj := range xs {
			if j == i {
				continue
			}
			num = gfMul(num, xj)
			den = gfMul(den, xi^xj)
		}
		l := gfMul(num, gfInv(den))
		for k := range size {
			out[k] ^= gfMul(l, ys[i][k])
		}
	}
	return out, nil
}
