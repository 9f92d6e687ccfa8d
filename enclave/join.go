package enclave

import (
	"crypto/cipher"
	"errors"
)

// SealRootKeyWith encrypts the root key itself with aead: the one way the
// root key leaves this package, for the attested cluster join
// (cluster/join, decisions/28). The caller builds aead from a secret that
// only the joining node's TPM can recover (credential activation), so the
// ciphertext opens only there. nonce must be aead.NonceSize() fresh
// random bytes; additional binds the ciphertext to its context (cluster,
// request, attestation key).
func (r *Root) SealRootKeyWith(aead cipher.AEAD, nonce, additional []byte) ([]byte, error) {
	if len(r.key) != RootKeySize || allZero(r.key) {
		return nil, errRootClosed
	}
	if aead == nil || len(nonce) != aead.NonceSize() {
		return nil, errors.New("enclave: bad AEAD or nonce for the root key")
	}
	return aead.Seal(nil, nonce, r.key, additional), nil
}

func allZero(b []byte) bool {
	var x byte
	for _, c := range b {
		x |= c
	}
	return x == 0
}
