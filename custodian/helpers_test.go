package custodian

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/store"
)

// transitPolicy is what a production token holds (docs in doc.go).
const transitPolicy = `
path "transit/encrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/decrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/rewrap/keywarden-custodian"  { capabilities = ["update"] }
path "transit/keys/keywarden-custodian"    { capabilities = ["read"] }
`

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newClient makes a client with a token holding transitPolicy.
func newClient(t testing.TB, v *vaultdev.Server, mod func(*Options)) *Client {
	t.Helper()
	v.WritePolicy("custodian", transitPolicy)
	o := Options{Addr: v.Addr(), Token: secret.NewString(v.NewToken(0, "custodian")), Logger: quiet}
	if mod != nil {
		mod(&o)
	}
	c, err := New(testCtx(t), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func newDB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "keywarden.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newService(t testing.TB, c *Client, db *store.DB, opts ServiceOptions) *Service {
	t.Helper()
	s := NewService(c, db, opts)
	t.Cleanup(s.Close)
	return s
}

// wantCode fails unless err is an *apierr.Error with code.
func wantCode(t testing.TB, err error, code string) *apierr.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	e, ok := apierr.As(err)
	if !ok {
		t.Fatalf("got %T %v, want *apierr.Error %s", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("got code %s (%v), want %s", e.Code, err, code)
	}
	return e
}

// noSecretIn fails when the error text (message and cause) holds one of
// the secrets.
func noSecretIn(t testing.TB, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error text holds a secret: %q", err.Error())
		}
	}
}

// waitJob polls until the job leaves "running" (a hang guard, not a timing
// assertion).
func waitJob(t testing.TB, s *Service, id string) JobStatus {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		j, err := s.JobStatus(context.Background(), id)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("JobStatus: %v", err)
		}
		if j.State != JobRunning {
			return j
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s still running", id)
	return JobStatus{}
}
