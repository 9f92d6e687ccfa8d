//go:build cgo

// Package tpmsim opens the in-process Microsoft TPM 2.0 simulator of
// go-tpm-tools as a go-tpm transport. It is for tests and `keywarden dev`
// only: its seeds are derived from a fixed number, so anyone can recreate
// its keys. The simulator is cgo code and one per process; a second Open
// waits until the first is closed. Release builds (CGO_ENABLED=0) leave it out.
package tpmsim

import (
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// Available reports whether this build includes the simulator.
const Available = true

// DevSeed is the fixed, public seed of dev mode. INSECURE by design.
const DevSeed = 0x6b65797761726465 // "keywarde"

// Sim is an open simulator.
type Sim struct {
	transport.TPMCloser
	sim *simulator.Simulator
}

// Open starts the simulator with hierarchy seeds derived from seed: the
// same seed gives the same storage root key, so sealed blobs survive a
// "restart" (Close and Open again). NV indices do not survive.
func Open(seed int64) (*Sim, error) {
	s, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, err
	}
	return &Sim{TPMCloser: transport.FromReadWriteCloser(s), sim: s}, nil
}
