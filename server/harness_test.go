package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/store"
)

const testAdminKey = "test-admin-key-0123456789abcdef"

type harness struct {
	t       *testing.T
	srv     *Server
	http    *httptest.Server
	db      *store.DB
	audit   *audit.Log
	issuer  *firebasetest.Issuer
	tpm     *tpmdev.Counting
	custody *enclave.Custody
}

type harnessOpt func(*config.Config, *Options)

// newHarness runs the real server on loopback with the simulator, a bbolt
// file, the audit log, and a Firebase issuer stand-in for project "proj-a".
func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	sim, err := tpmsim.Open(7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	counting := tpmdev.NewCounting(sim)
	db, err := store.Open(filepath.Join(dir, "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	root, raw, err := enclave.Initialize(ctx, counting, db, enclave.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	alog, err := audit.Open(ctx, audit.Options{Dir: filepath.Join(dir, "audit"), AnchorKey: root.Subkey("audit-anchor"), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close(context.Background()) })
	issuer := firebasetest.NewIssuer(t, "proj-a")
	cfg := config.DevDefaults()
	cfg.Admin.Key = secret.NewString(testAdminKey)
	cfg.Firebase.ProjectIDs = []string{"proj-a", "proj-b"}
	cfg.Limits.RatePerSecond, cfg.Limits.RateBurst = 10000, 10000
	v, err := firebase.New(ctx, firebase.Options{ProjectIDs: cfg.Firebase.ProjectIDs, CertsURL: issuer.URL(), Clock: issuer.Clock().Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	custody := enclave.NewCustody(db, root, enclave.CustodyOptions{Clock: issuer.Clock().Now})
	o := Options{Config: cfg, DB: db, Custody: custody, Sessions: root.SessionTokens(issuer.Clock().Now), Audit: alog, Firebase: v, Clock: issuer.Clock().Now}
	for _, f := range opts {
		f(&o.Config, &o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Public)
	t.Cleanup(hs.Close)
	return &harness{t: t, srv: srv, http: hs, db: db, audit: alog, issuer: issuer, tpm: counting, custody: custody}
}

type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) code() string {
	var e errorBody
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

func (h *harness) do(method, path string, body any, headers ...string) reply {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, h.http.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func (h *harness) admin(method, path string, body any) reply {
	h.t.Helper()
	return h.do(method, path, body, "Authorization", "Bearer "+testAdminKey)
}

func (h *harness) firebase(method, path, token string, body any) reply {
	h.t.Helper()
	return h.do(method, path, body, "Authorization", "Bearer "+token)
}

func (h *harness) advance(d time.Duration) { h.issuer.Clock().Advance(d) }
