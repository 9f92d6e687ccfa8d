package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultEventLogPath is where Linux exposes the firmware's TCG event log.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// QuoteOptions say what a quote covers. Nonce, BoundKey and PCRs are
// required.
type QuoteOptions struct {
	// Nonce is the verifier's fresh random value, 16..64 bytes
	// ([ErrBadNonce] otherwise).
	Nonce []byte
	// BoundKey is the public key the quote binds: the appliance's HPKE
	// public key (decisions/09 and decisions/11), or its TLS SubjectPublicKeyInfo DER
	// where clients reach the appliance's own TLS. Required
	// ([ErrNoBoundKey]); the evidence carries it.
	BoundKey []byte
	// PCRs are the SHA-256 bank PCRs to quote, each 0..23 (at least one,
	// [ErrNoPCRs] otherwise). Duplicates are ignored.
	PCRs []int
	// EventLogPath is read into [Evidence.EventLog] when set and readable
	// (at most [MaxEventLog] bytes; an unreadable or larger log is left
	// out, not an error). Empty: no event log. Production passes
	// [DefaultEventLogPath].
	EventLogPath string
}

// Validate checks the options without touching the TPM.
func (o *QuoteOptions) Validate() error {
	if n := len(o.Nonce); n < MinNonce || n > MaxNonce {
		return ErrBadNonce
	}
	if len(o.BoundKey) == 0 {
		return ErrNoBoundKey
	}
	if len(o.PCRs) == 0 {
		return ErrNoPCRs
	}
	for _, i := range o.PCRs {
		if i < 0 || i > MaxPCR {
			return fmt.Errorf("%w: PCR %d", ErrNoPCRs, i)
		}
	}
	return nil
}

// quoteAttempts bounds how often Quote re-reads PCRs that changed between
// reading them and quoting them.
const quoteAttempts = 3

// Quote makes evidence: it reads the selected PCRs, has the TPM quote them
// with the attestation key over [ExtraData](nonce, bound key), and checks
// that the values it read are the ones the TPM signed (retrying when a PCR
// was extended in between). tpm is the TPM the key was loaded into. It
// fills every field of [Evidence] except EK certificates (see
// [ReadEKCertificates]: read them once at start and copy them in) and the
// build's Version and BinaryDigest.
func Quote(ctx context.Context, tpm transport.TPM, ak *AK, opts QuoteOptions) (*Evidence, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if ak == nil {
		return nil, ErrAKClosed
	}
	pcrs := slices.Clone(opts.PCRs)
	slices.Sort(pcrs)
	pcrs = slices.Compact(pcrs)
	sel := pcrSelection(pcrs)
	extra := ExtraData(opts.Nonce, opts.BoundKey)

	ak.mu.Lock()
	defer ak.mu.Unlock()
	if ak.closed {
		return nil, ErrAKClosed
	}
	var lastErr error
	for attempt := 0; attempt < quoteAttempts; attempt++ {
		values, err := ReadPCRs(ctx, tpm, pcrs)
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: extra},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      sel,
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: TPM2_Quote: %w", err)
		}
		att, err := rsp.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("attest: decode quote: %w", err)
		}
		info, err := att.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("attest: decode quote: %w", err)
		}
		h := sha256.New()
		for _, i := range pcrs {
			h.Write(values[i])
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			lastErr = errors.New("attest: PCRs changed while quoting")
			continue
		}
		ev := &Evidence{
			Format:    EvidenceFormat,
			Quote:     bytes.Clone(rsp.Quoted.Bytes()),
			Signature: tpm2.Marshal(rsp.Signature),
			AKPublic:  ak.Public(),
			PCRBank:   "sha256",
			PCRs:      values,
			BoundKey:  bytes.Clone(opts.BoundKey),
		}
		if opts.EventLogPath != "" {
			ev.EventLog = readEventLog(opts.EventLogPath)
		}
		return ev, nil
	}
	return nil, lastErr
}

// ReadPCRs reads PCRs of the SHA-256 bank. The TPM returns at most eight
// per command, so it asks until it has them all. The result maps each
// index to its 32-byte value. It is what `keywarden attest policy` prints,
// through [PolicyFromPCRs].
func ReadPCRs(ctx context.Context, tpm transport.TPM, pcrs []int) (map[int][]byte, error) {
	if len(pcrs) == 0 {
		return nil, ErrNoPCRs
	}
	want := make(map[int]bool, len(pcrs))
	for _, i := range pcrs {
		if i < 0 || i > MaxPCR {
			return nil, fmt.Errorf("%w: PCR %d", ErrNoPCRs, i)
		}
		want[i] = true
	}
	out := make(map[int][]byte, len(want))
	for len(want) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rest := make([]int, 0, len(want))
		for i := range want {
			rest = append(rest, i)
		}
		slices.Sort(rest)
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(rest)}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: TPM2_PCR_Read: %w", err)
		}
		got, err := pcrIndices(&rsp.PCRSelectionOut)
		if err != nil {
			return nil, err
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("attest: TPM2_PCR_Read returned %d values for %d PCRs", len(rsp.PCRValues.Digests), len(got))
		}
		for n, i := range got {
			if !want[i] {
				return nil, fmt.Errorf("attest: TPM2_PCR_Read returned PCR %d, not asked for", i)
			}
			v := rsp.PCRValues.Digests[n].Buffer
			if len(v) != sha256.Size {
				return nil, fmt.Errorf("attest: TPM2_PCR_Read returned %d bytes for PCR %d", len(v), i)
			}
			out[i] = bytes.Clone(v)
			delete(want, i)
		}
	}
	return out, nil
}

// pcrSelection selects PCRs of the SHA-256 bank.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for n, i := range pcrs {
		u[n] = uint(i)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// pcrIndices lists the SHA-256 PCRs a selection names, in order.
func pcrIndices(sel *tpm2.TPMLPCRSelection) ([]int, error) {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("attest: TPM answered for bank %v, not SHA-256", s.Hash)
		}
		for byteIdx, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					out = append(out, byteIdx*8+bit)
				}
			}
		}
	}
	return out, nil
}

// readEventLog returns the event log at path, or nil when it cannot be read
// or is larger than MaxEventLog.
func readEventLog(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxEventLog+1))
	if err != nil || len(b) > MaxEventLog || len(b) == 0 {
		return nil
	}
	return b
}
