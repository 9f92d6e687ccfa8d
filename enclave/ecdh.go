package enclave

import "crypto/ecdh"

func ecdhX25519() ecdh.Curve { return ecdh.X25519() }
