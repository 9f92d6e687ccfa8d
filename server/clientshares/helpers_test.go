package clientshares

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

const testAdminKey = "test-admin-key-clientshares-0123456789"

// env is the real server on loopback with the simulator-sealed root key,
// a bbolt file, the audit log and this package's routes.
type env struct {
	t        *testing.T
	http     *httptest.Server
	db       *store.DB
	root     *enclave.Root
	audit    *audit.Log
	auditDir string
	store    *Store
	now      time.Time
}

type envOpt func(*config.Config, *Options)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	sim, err := tpmsim.Open(11)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	db, err := store.Open(filepath.Join(dir, "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	root, raw, err := enclave.Initialize(ctx, sim, db, enclave.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Wipe()
	t.Cleanup(root.Close)
	auditDir := filepath.Join(dir, "audit")
	alog, err := audit.Open(ctx, audit.Options{Dir: auditDir, AnchorKey: root.Subkey("audit-anchor"), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close(context.Background()) })

	v := &env{t: t, db: db, root: root, audit: alog, auditDir: auditDir, now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	cfg := config.DevDefaults()
	cfg.Admin.Key = secret.NewString(testAdminKey)
	cfg.Limits.RatePerSecond, cfg.Limits.RateBurst = 10000, 10000
	so := Options{DB: db, Root: root, Clock: func() time.Time { return v.now }}
	for _, f := range opts {
		f(&cfg, &so)
	}
	st, err := New(so)
	if err != nil {
		t.Fatal(err)
	}
	v.store = st
	h := NewHandler(st)
	custody := enclave.NewCustody(db, root, enclave.CustodyOptions{})
	srv, err := server.New(server.Options{Config: cfg, DB: db, Custody: custody, Sessions: root.SessionTokens(nil), Audit: alog,
		Routes: []server.Routes{h}, Users: []server.UserData{h}})
	if err != nil {
		t.Fatal(err)
	}
	v.http = httptest.NewServer(srv.Public)
	t.Cleanup(v.http.Close)
	return v
}

type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) code() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

func (v *env) do(method, path string, body any, headers ...string) reply {
	v.t.Helper()
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
	req, _ := http.NewRequest(method, v.http.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func (v *env) admin(method, path string, body any) reply {
	v.t.Helper()
	return v.do(method, path, body, "Authorization", "Bearer "+testAdminKey)
}

// want fails unless r has status (and code, when not empty).
func want(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.Status != status || (code != "" && r.code() != code) {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Body, status, code)
	}
}

// auditLines returns every audit line written so far (made durable first).
func (v *env) auditLines() string {
	v.t.Helper()
	if err := v.audit.Anchor(context.Background()); err != nil {
		v.t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(v.auditDir, "*.jsonl"))
	var sb strings.Builder
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.IsDir() {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			v.t.Fatal(err)
		}
		sb.Write(b)
	}
	return sb.String()
}

// rawBucket returns every key and value of BucketClientShares.
func (v *env) rawBucket() map[string][]byte {
	v.t.Helper()
	out := map[string][]byte{}
	err := v.db.View(context.Background(), func(tx *store.Tx) error {
		return tx.ForEach(store.BucketClientShares, nil, func(k, val []byte) error {
			out[string(k)] = append([]byte(nil), val...)
			return nil
		})
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return out
}

func sharePath(user, method string) string {
	return "/v1/admin/users/" + user + "/client-shares/" + method
}
