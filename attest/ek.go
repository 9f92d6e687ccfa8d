package attest

import (
	"context"
	"encoding/asn1"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// NV indices where TPM makers store endorsement key certificates (TCG EK
// Credential Profile): the certificate of the RSA 2048 and of the ECC NIST
// P-256 EK (low range, default templates), and the range for the
// certificates of the CAs that issued them.
const (
	EKCertIndexRSA   = tpm2.TPMHandle(0x01c00002)
	EKCertIndexECC   = tpm2.TPMHandle(0x01c0000a)
	EKChainIndexLow  = tpm2.TPMHandle(0x01c00100)
	EKChainIndexHigh = tpm2.TPMHandle(0x01c001ff)
)

// maxNVCert bounds what is read from one NV index.
const maxNVCert = 16 << 10

// ReadEKCertificates reads the EK certificates the TPM's maker stored in NV:
// certs holds the ECC then the RSA EK certificate (each when present), chain
// the intermediate CA certificates from the chain range. A TPM without any
// (the simulator, swtpm without swtpm_setup) gives two empty lists and no
// error. Certificates are returned as DER with any NV padding removed;
// they are not parsed or checked here (the verifier does that).
//
// Read them once at start: NV reads are slow on hardware and the
// certificates do not change.
func ReadEKCertificates(ctx context.Context, tpm transport.TPM) (certs, chain [][]byte, err error) {
	indices, err := nvIndices(ctx, tpm, EKCertIndexRSA, EKChainIndexHigh)
	if err != nil {
		return nil, nil, err
	}
	present := make(map[tpm2.TPMHandle]bool, len(indices))
	for _, h := range indices {
		present[h] = true
	}
	for _, h := range []tpm2.TPMHandle{EKCertIndexECC, EKCertIndexRSA} {
		if !present[h] {
			continue
		}
		data, err := readNV(ctx, tpm, h)
		if err != nil {
			return nil, nil, err
		}
		if ders := splitDER(data); len(ders) > 0 {
			certs = append(certs, ders[0])
		}
	}
	for _, h := range indices {
		if h < EKChainIndexLow || h > EKChainIndexHigh {
			continue
		}
		data, err := readNV(ctx, tpm, h)
		if err != nil {
			return nil, nil, err
		}
		chain = append(chain, splitDER(data)...)
	}
	return certs, chain, nil
}

// nvIndices lists the defined NV indices in [low, high].
func nvIndices(ctx context.Context, tpm transport.TPM, low, high tpm2.TPMHandle) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	next := uint32(low)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: next, PropertyCount: 64}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: list NV indices: %w", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("attest: list NV indices: %w", err)
		}
		for _, h := range hs.Handle {
			if h > high {
				return out, nil
			}
			out = append(out, h)
			next = uint32(h) + 1
		}
		if !rsp.MoreData || len(hs.Handle) == 0 {
			return out, nil
		}
	}
}

// readNV reads a whole NV index with an empty password: the index's own
// authorization when it allows that (TPMA_NV_AUTHREAD), else the owner's.
// An index that was never written reads as empty.
func readNV(ctx context.Context, tpm transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: read NV %#x public area: %w", uint32(index), err)
	}
	pub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("attest: read NV %#x public area: %w", uint32(index), err)
	}
	if !pub.Attributes.Written || pub.DataSize == 0 {
		return nil, nil
	}
	if pub.DataSize > maxNVCert {
		return nil, fmt.Errorf("attest: NV %#x holds %d bytes, more than %d", uint32(index), pub.DataSize, maxNVCert)
	}
	nv := tpm2.NamedHandle{Handle: index, Name: pubRsp.NVName}
	var auth tpm2.AuthHandle
	switch {
	case pub.Attributes.AuthRead:
		auth = tpm2.AuthHandle{Handle: index, Name: pubRsp.NVName, Auth: tpm2.PasswordAuth(nil)}
	case pub.Attributes.OwnerRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	default:
		return nil, fmt.Errorf("attest: NV %#x is readable with neither its own nor the owner's authorization", uint32(index))
	}
	chunk := nvBufferMax(tpm)
	out := make([]byte, 0, pub.DataSize)
	for off := 0; off < int(pub.DataSize); off += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(chunk, int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{AuthHandle: auth, NVIndex: nv, Size: uint16(n), Offset: uint16(off)}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: read NV %#x: %w", uint32(index), err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// nvBufferMax is the most the TPM returns per TPM2_NV_Read (TPM_PT_NV_BUFFER_MAX),
// or 512 when it does not say.
func nvBufferMax(tpm transport.TPM) int {
	const fallback = 512
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTNVBufferMax), PropertyCount: 1}.Execute(tpm)
	if err != nil {
		return fallback
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return fallback
	}
	if v := int(props.TPMProperty[0].Value); v > 0 && v <= 4096 {
		return v
	}
	return fallback
}

// splitDER cuts concatenated DER SEQUENCEs (certificates) out of data,
// stopping at the first bytes that do not start one (TPM makers pad NV with
// 0x00 or 0xff).
func splitDER(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(data, &v)
		if err != nil || v.Class != asn1.ClassUniversal || v.Tag != asn1.TagSequence || !v.IsCompound {
			break
		}
		out = append(out, data[:len(data)-len(rest)])
		data = rest
	}
	return out
}
