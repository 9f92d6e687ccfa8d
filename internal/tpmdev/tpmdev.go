// Package tpmdev opens the TPM that Keywarden talks to and wraps it for
// accounting. It is the production transport path: a kernel device, or a TPM
// process (such as swtpm) reached over a TCP socket. The in-process
// simulator is deliberately not here: it is cgo code, and dev mode opens it
// under its own build tag, so a CGO_ENABLED=0 release build links none of it.
//
// # Specs
//
// [Open] takes one string, as it appears in configuration:
//
//   - "" (the zero value): [DefaultDevice], the kernel's resource manager.
//   - "/dev/tpmrm0", "/dev/tpm0", or any absolute path: a TPM character device,
//     through go-tpm's linuxtpm transport. Prefer the resource manager
//     (tpmrm0): it flushes a crashed process's handles and shares the TPM
//     with other programs; tpm0 admits one user at a time.
//   - "swtpm:host:port" or "tcp://host:port": a TPM that reads the raw TPM 2.0
//     command stream from a TCP connection, such as swtpm started with
//     `--server type=tcp,port=…`. [Open] sends TPM2_Startup(CLEAR) and accepts
//     TPM_RC_INITIALIZE (already started, e.g. with `--flags startup-clear`).
//
// # Counting
//
// [Counting] wraps any [transport.TPM] and counts the commands sent through
// it, so a test (and the metrics) can show that a key release makes no TPM
// command at all.
package tpmdev

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultDevice is the device [Open] uses for an empty spec.
const DefaultDevice = "/dev/tpmrm0"

// Errors returned by [Open] and the TCP transport.
var (
	// ErrBadSpec: the spec names no transport tpmdev knows.
	ErrBadSpec = errors.New("tpmdev: unsupported TPM spec")
	// ErrClosed: the connection was closed, or broken by an earlier I/O
	// error (a TCP stream that lost its framing cannot be resynchronised).
	ErrClosed = errors.New("tpmdev: TPM connection closed")
	// ErrBadResponse: the TPM answered with a header that cannot be a TPM
	// response (size smaller than the header or larger than [MaxResponse]).
	ErrBadResponse = errors.New("tpmdev: malformed TPM response")
)

// MaxResponse bounds the size of one TPM response read from a socket. TPMs
// answer in at most a few kilobytes; the bound keeps a confused peer from
// making us allocate without limit.
const MaxResponse = 64 << 10

// CommandTimeout bounds one command/response exchange over TCP, so a hung
// TPM process fails the caller instead of blocking it forever.
const CommandTimeout = 2 * time.Minute

// Open opens the TPM named by spec (see the package documentation for the
// forms). ctx bounds connecting and, for TCP TPMs, the start-up command. The
// caller closes the result.
func Open(ctx context.Context, spec string) (transport.TPMCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return openDevice(DefaultDevice)
	case strings.HasPrefix(spec, "/"):
		return openDevice(spec)
	case strings.HasPrefix(spec, "swtpm:"):
		return openTCP(ctx, strings.TrimPrefix(spec, "swtpm:"))
	case strings.HasPrefix(spec, "tcp://"):
		return openTCP(ctx, strings.TrimPrefix(spec, "tcp://"))
	default:
		return nil, fmt.Errorf("%w %q: want a device path, swtpm:host:port or tcp://host:port", ErrBadSpec, spec)
	}
}

func openDevice(path string) (transport.TPMCloser, error) {
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpmdev: open %s: %w", path, err)
	}
	return t, nil
}

func openTCP(ctx context.Context, addr string) (transport.TPMCloser, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadSpec, addr, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tpmdev: connect to TPM at %s: %w", addr, err)
	}
	t := &tcpTPM{conn: conn}
	if err := startup(ctx, t); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("tpmdev: TPM at %s: %w", addr, err)
	}
	return t, nil
}

// startup sends TPM2_Startup(CLEAR). A TPM that is already started answers
// TPM_RC_INITIALIZE, which is success for us.
func startup(ctx context.Context, t *tcpTPM) error {
	// Send blocks without a context; let ctx cut the exchange short.
	stop := context.AfterFunc(ctx, func() { _ = t.conn.SetDeadline(time.Now()) })
	defer stop()
	_, err := tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(t)
	if err == nil || errors.Is(err, tpm2.TPMRCInitialize) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("TPM2_Startup: %w", err)
}

// tcpTPM speaks the raw TPM 2.0 command stream over one TCP connection: a
// command is written as is, and the response is read as a 10-byte header
// (tag, size, response code) followed by size-10 more bytes. This is swtpm's
// data channel framing (not the Microsoft simulator's, which prefixes each
// command with a TPM_SEND_COMMAND header and needs a platform port).
type tcpTPM struct {
	mu     sync.Mutex
	conn   net.Conn
	broken bool
}

// Send implements transport.TPM. Commands are serialised; after any I/O
// error the connection is closed and every later call returns [ErrClosed].
func (t *tcpTPM) Send(cmd []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken {
		return nil, ErrClosed
	}
	rsp, err := t.exchange(cmd)
	if err != nil {
		t.broken = true
		_ = t.conn.Close()
		return nil, err
	}
	return rsp, nil
}

func (t *tcpTPM) exchange(cmd []byte) ([]byte, error) {
	if err := t.conn.SetDeadline(time.Now().Add(CommandTimeout)); err != nil {
		return nil, fmt.Errorf("tpmdev: %w", err)
	}
	if _, err := t.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpmdev: send command: %w", err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(t.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("tpmdev: read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > MaxResponse {
		return nil, fmt.Errorf("%w: size %d", ErrBadResponse, size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(t.conn, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("tpmdev: read response body: %w", err)
	}
	return rsp, nil
}

// Close closes the connection. It is safe to call more than once.
func (t *tcpTPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken {
		return nil
	}
	t.broken = true
	return t.conn.Close()
}

// Counting is a [transport.TPM] that counts the commands sent through it.
// It is safe for concurrent use: Send holds a lock for the whole exchange,
// so a command and its response stay together even when several users
// (attestation quotes, the rollback counter) share the TPM and the wrapped
// transport does not serialize them itself. Build one with [NewCounting].
type Counting struct {
	tpm transport.TPM
	n   atomic.Uint64
	mu  sync.Mutex
}

// NewCounting wraps tpm.
func NewCounting(tpm transport.TPM) *Counting { return &Counting{tpm: tpm} }

// Send counts the command and forwards it. Failed commands count too: each
// one still occupied the TPM.
func (c *Counting) Send(cmd []byte) ([]byte, error) {
	c.n.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tpm.Send(cmd)
}

// Count is the number of commands sent so far.
func (c *Counting) Count() uint64 { return c.n.Load() }

// Close closes the wrapped TPM when it has a Close method, so a Counting
// around a [transport.TPMCloser] is itself one.
func (c *Counting) Close() error {
	if cl, ok := c.tpm.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// TransientHandles lists the transient object handles currently loaded in
// the TPM. Tests call it after each operation to show that nothing leaks;
// with the kernel resource manager it lists this connection's handles only.
func TransientHandles(tpm transport.TPM) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	next := uint32(tpm2.TPMHTTransient) << 24
	for {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("tpmdev: list transient handles: %w", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("tpmdev: list transient handles: %w", err)
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 != uint32(tpm2.TPMHTTransient) {
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
