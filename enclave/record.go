package enclave

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrOpen means a sealed record did not open: it was altered, moved to
// another owner, method or kind, or sealed under another root key.
var ErrOpen = errors.New("enclave: sealed record does not open (altered, moved, or sealed under another root key)")

// RecordSchema is the record format's version, part of every record's
// additional data.
const RecordSchema = 1

const (
	recordMagic = 'K'
	saltSize    = 32
	nonceSize   = 12
	headerSize  = 2 + 8 + saltSize + nonceSize // magic, schema, write version, salt, nonce
)

// Binding is what a sealed record is bound to. A record opened with any
// other binding fails, so a record copied under another user, method or
// kind does not open.
type Binding struct {
	Kind    string // "key", "share", …
	Owner   Owner
	Method  string
	Version uint64 // write version (rollback detection)
}

func (b Binding) additionalData() []byte {
	ad := make([]byte, 0, 64+len(b.Owner)+len(b.Method))
	ad = append(ad, "keywarden record v1"...)
	for _, s := range []string{b.Kind, string(b.Owner), b.Method} {
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(s)))
		ad = append(ad, s...)
	}
	ad = binary.BigEndian.AppendUint32(ad, RecordSchema)
	ad = binary.BigEndian.AppendUint64(ad, b.Version)
	return ad
}

// Seal encrypts plaintext with AES-256-GCM under a subkey derived from the
// root key with a fresh random salt, bound to b.
//
// Layout: 'K' ‖ schema(1) ‖ version(8) ‖ salt(32) ‖ nonce(12) ‖ ciphertext ‖ tag(16).
func (r *Root) Seal(b Binding, plaintext []byte) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+len(plaintext)+16)
	out[0], out[1] = recordMagic, RecordSchema
	binary.BigEndian.PutUint64(out[2:10], b.Version)
	salt, nonce := out[10:10+saltSize], out[10+saltSize:headerSize]
	if _, err := rand.Read(out[10:headerSize]); err != nil {
		return nil, err
	}
	aead, err := r.recordAEAD(salt)
	if err != nil {
		return nil, err
	}
	return aead.Seal(out, nonce, plaintext, b.additionalData()), nil
}

// Open decrypts a record sealed by Seal with the same binding (Version is
// read from the record when b.Version is zero).
func (r *Root) Open(b Binding, sealed []byte) ([]byte, error) {
	if len(sealed) < headerSize+16 || sealed[0] != recordMagic || sealed[1] != RecordSchema {
		return nil, ErrOpen
	}
	v := binary.BigEndian.Uint64(sealed[2:10])
	if b.Version == 0 {
		b.Version = v
	} else if b.Version != v {
		return nil, ErrOpen
	}
	salt, nonce := sealed[10:10+saltSize], sealed[10+saltSize:headerSize]
	aead, err := r.recordAEAD(salt)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, sealed[headerSize:], b.additionalData())
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// RecordVersion reads the write version from a sealed record's header.
func RecordVersion(sealed []byte) (uint64, error) {
	if len(sealed) < headerSize {
		return 0, ErrOpen
	}
	return binary.BigEndian.Uint64(sealed[2:10]), nil
}

func (r *Root) recordAEAD(salt []byte) (cipher.AEAD, error) {
	if len(r.key) != RootKeySize {
		return nil, errRootClosed
	}
	k := r.derive(salt, "keywarden record v1", 32)
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	return cipher.NewGCM(block)
}
