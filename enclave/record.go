package enclave

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
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

// recordInfo is the HKDF info of record subkeys.
const recordInfo = "keywarden record v1"

func (r *Root) recordAEAD(salt []byte) (cipher.AEAD, error) {
	if len(r.key) != RootKeySize {
		return nil, errRootClosed
	}
	var k [32]byte
	r.recordKey(&k, salt)
	defer clear(k[:])
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	return cipher.NewGCM(block)
}

// recordKey writes HKDF-SHA256(root, salt, recordInfo, 32) into k: the same
// key as r.derive(salt, recordInfo, 32), computed as HMAC-SHA256 written
// out over SHA-256 with stack buffers (extract, then the one block of
// expand), without the allocations of hmac.New and crypto/hkdf. Every
// record open derives one (the salt is the record's own), so a release
// pays it. salt and the root key are at most a SHA-256 block (64 bytes),
// as HMAC keys they are only zero-padded.
func (r *Root) recordKey(k *[32]byte, salt []byte) {
	var prk [sha256.Size]byte
	hmacSHA256(&prk, salt, r.key)
	var msg [len(recordInfo) + 1]byte
	copy(msg[:], recordInfo)
	msg[len(recordInfo)] = 1
	hmacSHA256(k, prk[:], msg[:])
	clear(prk[:])
}

// hmacSHA256 writes HMAC-SHA256(key, msg) into out; key and msg are at most
// 64 bytes (a block), which holds for recordKey's inputs.
func hmacSHA256(out *[sha256.Size]byte, key, msg []byte) {
	const block = 64
	if len(key) > block || len(msg) > block {
		panic("enclave: hmacSHA256 input longer than a block")
	}
	var buf [block + block]byte
	copy(buf[:block], key)
	for i := range block {
		buf[i] ^= 0x36
	}
	n := copy(buf[block:], msg)
	inner := sha256.Sum256(buf[:block+n])
	for i := range block {
		buf[i] ^= 0x36 ^ 0x5c
	}
	copy(buf[block:], inner[:])
	*out = sha256.Sum256(buf[:block+sha256.Size])
	clear(buf[:])
	clear(inner[:])
}
