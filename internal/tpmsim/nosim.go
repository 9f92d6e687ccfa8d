//go:build !cgo

package tpmsim

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// Available reports whether this build includes the simulator.
const Available = false

// DevSeed is the fixed, public seed of dev mode.
const DevSeed = 0x6b65797761726465

// Sim is not available in this build.
type Sim struct{ transport.TPMCloser }

// ErrNoSimulator is returned by Open in builds without cgo (release builds).
var ErrNoSimulator = errors.New("tpmsim: this build has no TPM simulator (release builds leave it out); use a real TPM, or a development build for `keywarden dev`")

// Open fails: the release build has no simulator.
func Open(seed int64) (*Sim, error) { return nil, ErrNoSimulator }
