package custodianapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

const testAdminKey = "test-admin-key-custodian-0123456789"

// transitPolicy is what a production token holds (custodian/doc.go).
const transitPolicy = `
path "transit/encrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/decrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/rewrap/keywarden-custodian"  { capabilities = ["update"] }
path "transit/keys/keywarden-custodian"    { capabilities = ["read"] }
`

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is the real server on loopback (simulator-sealed root key, bbolt,
// audit log) with this package's routes over a real Vault dev server.
type env struct {
	t        testing.TB
	vault    *vaultdev.Server
	http     *httptest.Server
	db       *store.DB
	audit    *audit.Log
	auditDir string
	svc      *custodian.Service
	token    string // the Vault token the client uses
	metrics  *metrics.Metrics
}

// envOpts change newEnv. The zero value: a fresh Vault, a token with
// transitPolicy, default client and service options.
type envOpts struct {
	vault    *vaultdev.Server // nil: start one
	noVault  bool             // no Service: the routes answer 503
	policy   string           // "" means transitPolicy
	client   func(*custodian.Options)
	service  custodian.ServiceOptions
	maxBatch int
	maxBody  int64
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	sim, err := tpmsim.Open(13)
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
	v := &env{t: t, db: db, audit: alog, auditDir: auditDir, metrics: metrics.New()}

	hopts := Options{DB: db, MaxBatchItems: o.maxBatch}
	if !o.noVault {
		v.vault = o.vault
		if v.vault == nil {
			v.vault = vaultdev.Start(t)
		}
		policy := o.policy
		if policy == "" {
			policy = transitPolicy
		}
		v.vault.WritePolicy("custodian-test", policy)
		v.token = v.vault.NewToken(0, "custodian-test")
		co := custodian.Options{Addr: v.vault.Addr(), Token: secret.NewString(v.token), Logger: quiet}
		if o.client != nil {
			o.client(&co)
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		client, err := custodian.New(cctx, co)
		if err != nil {
			t.Fatalf("custodian.New: %v", err)
		}
		t.Cleanup(client.Close)
		if o.service.Logger == nil {
			o.service.Logger = quiet
		}
		v.svc = custodian.NewService(client, db, o.service)
		t.Cleanup(v.svc.Close)
		hopts.Service = v.svc
	}
	h, err := New(hopts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DevDefaults()
	cfg.Admin.Key = secret.NewString(testAdminKey)
	cfg.Limits.RatePerSecond, cfg.Limits.RateBurst = 1e6, 1e6
	if o.maxBody > 0 {
		cfg.Limits.MaxBodyBytes = o.maxBody
	}
	custody := enclave.NewCustody(db, root, enclave.CustodyOptions{})
	srv, err := server.New(server.Options{Config: cfg, Logger: quiet, DB: db, Custody: custody, Sessions: root.SessionTokens(nil),
		Audit: alog, Metrics: v.metrics, Routes: []server.Routes{h}, Users: []server.UserData{h}})
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

func (r reply) message() string {
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Message
}

func (r reply) decode(t testing.TB, v any) {
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
func want(t testing.TB, r reply, status int, code string) {
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
		b, err := os.ReadFile(f)
		if err != nil {
			v.t.Fatal(err)
		}
		sb.Write(b)
	}
	return sb.String()
}

// rawBucket returns every key and value of BucketCustodian.
func (v *env) rawBucket() map[string]string {
	v.t.Helper()
	out := map[string]string{}
	err := v.db.View(context.Background(), func(tx *store.Tx) error {
		return tx.ForEach(store.BucketCustodian, nil, func(k, val []byte) error {
			out[string(k)] = string(val)
			return nil
		})
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return out
}

func sharePath(user, method string) string {
	p := "/v1/admin/users/" + user + "/custodian-share"
	if method != "" {
		p += "?method=" + method
	}
	return p
}

type shareBody struct {
	Method string `json:"method"`
	Share  string `json:"share"`
}

type infoBody struct {
	Method     string    `json:"method"`
	KeyVersion int       `json:"keyVersion"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// waitJob polls the job route until the job leaves "running" (a hang
// guard, not a timing assertion) and returns every progress seen.
func (v *env) waitJob(id string) []custodian.JobStatus {
	v.t.Helper()
	var seen []custodian.JobStatus
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		r := v.admin("GET", "/v1/admin/custodian/rewrap/"+id, nil)
		want(v.t, r, 200, "")
		var j custodian.JobStatus
		r.decode(v.t, &j)
		seen = append(seen, j)
		if j.State != custodian.JobRunning {
			return seen
		}
		time.Sleep(10 * time.Millisecond)
	}
	v.t.Fatalf("job %s still running", id)
	return nil
}
