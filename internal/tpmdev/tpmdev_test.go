package tpmdev_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
)

func TestOpenRefusesBadSpecs(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "not-a-device")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, spec string
		want       error // nil: any error will do
	}{
		{"unknown scheme", "simulator", tpmdev.ErrBadSpec},
		{"http url", "http://127.0.0.1:2321", tpmdev.ErrBadSpec},
		{"swtpm without port", "swtpm:127.0.0.1", tpmdev.ErrBadSpec},
		{"tcp without port", "tcp://localhost", tpmdev.ErrBadSpec},
		{"missing device", filepath.Join(t.TempDir(), "tpm9"), os.ErrNotExist},
		{"regular file", regular, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpm, err := tpmdev.Open(context.Background(), tc.spec)
			if err == nil {
				tpm.Close()
				t.Fatalf("Open(%q) succeeded", tc.spec)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Open(%q) = %v, want %v", tc.spec, err, tc.want)
			}
		})
	}
}

func TestOpenHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tpmdev.Open(ctx, "tcp://127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context = %v", err)
	}
}

// TestSwtpm talks to a real swtpm process over its TCP command port, both
// when swtpm started the TPM itself and when Open must send TPM2_Startup.
func TestSwtpm(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts swtpmtest.Options
	}{
		{"started by swtpm", swtpmtest.Options{}},
		{"started by Open", swtpmtest.Options{NoStartup: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := swtpmtest.Start(t, tc.opts)
			tpm, err := tpmdev.Open(context.Background(), sw.Spec)
			if err != nil {
				t.Fatalf("Open(%s): %v\n%s", sw.Spec, err, sw.Log())
			}
			defer tpm.Close()
			counting := tpmdev.NewCounting(tpm)
			a := getRandom(t, counting)
			b := getRandom(t, counting)
			if bytes.Equal(a, b) {
				t.Fatal("two GetRandom calls returned the same bytes")
			}
			if got := counting.Count(); got != 2 {
				t.Fatalf("Count = %d after two commands, want 2", got)
			}
			// A failing command counts too, and does not break the stream.
			if _, err := (tpm2.FlushContext{FlushHandle: tpm2.TPMHandle(0x80ffffff)}).Execute(counting); err == nil {
				t.Fatal("flushing a handle that does not exist succeeded")
			}
			if got := counting.Count(); got != 3 {
				t.Fatalf("Count = %d after three commands, want 3", got)
			}
			hs, err := tpmdev.TransientHandles(counting)
			if err != nil {
				t.Fatal(err)
			}
			if len(hs) != 0 {
				t.Fatalf("fresh TPM has transient handles %v", hs)
			}
			// A second Startup is refused by the TPM; the connection survives.
			if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tpm); !errors.Is(err, tpm2.TPMRCInitialize) {
				t.Fatalf("second Startup = %v, want TPM_RC_INITIALIZE", err)
			}
			getRandom(t, tpm)
		})
	}
}

func TestTransientHandlesListsLoadedObjects(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tpm, err := tpmdev.Open(context.Background(), "tcp://"+sw.Spec[len("swtpm:"):])
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	var loaded []tpm2.TPMHandle
	for i := 0; i < 2; i++ {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHOwner,
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}.Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		loaded = append(loaded, rsp.ObjectHandle)
	}
	hs, err := tpmdev.TransientHandles(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != len(loaded) {
		t.Fatalf("TransientHandles = %v, want %v", hs, loaded)
	}
	for _, h := range loaded {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tpm); err != nil {
			t.Fatal(err)
		}
	}
	if hs, err := tpmdev.TransientHandles(tpm); err != nil || len(hs) != 0 {
		t.Fatalf("after flushing: %v, %v", hs, err)
	}
}

func TestClosedConnectionRefusesCommands(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tpm, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tpm.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := tpm.Send([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}); !errors.Is(err, tpmdev.ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestBrokenStreamIsNotReused(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tpm, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	sw.Stop()
	if _, err := tpm.Send(getRandomCmd(t)); err == nil {
		t.Fatal("Send to a stopped swtpm succeeded")
	}
	if _, err := tpm.Send(getRandomCmd(t)); !errors.Is(err, tpmdev.ErrClosed) {
		t.Fatalf("Send after a broken stream = %v, want ErrClosed", err)
	}
}

func TestCountingClose(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tpm, err := tpmdev.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	c := tpmdev.NewCounting(tpm)
	var _ transport.TPMCloser = c
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Send(getRandomCmd(t)); !errors.Is(err, tpmdev.ErrClosed) {
		t.Fatalf("wrapped TPM still open after Counting.Close: %v", err)
	}
	if c.Count() != 0 {
		t.Fatalf("Count = %d, want 0", c.Count())
	}
}

// TestBuildsWithoutCgo: the release build is CGO_ENABLED=0; tpmdev must
// not pull in cgo (the simulator lives elsewhere).
func TestBuildsWithoutCgo(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	cmd := exec.Command(gobin, "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
}

func getRandom(t *testing.T, tpm transport.TPM) []byte {
	t.Helper()
	rsp, err := tpm2.GetRandom{BytesRequested: 16}.Execute(tpm)
	if err != nil {
		t.Fatalf("GetRandom: %v", err)
	}
	if len(rsp.RandomBytes.Buffer) != 16 {
		t.Fatalf("GetRandom returned %d bytes", len(rsp.RandomBytes.Buffer))
	}
	return rsp.RandomBytes.Buffer
}

func getRandomCmd(t *testing.T) []byte {
	t.Helper()
	b, err := tpm2.MarshalCommand(tpm2.GetRandom{BytesRequested: 8})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
