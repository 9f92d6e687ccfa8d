package passkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/store"
)

const (
	testRPID     = "example.com"
	testOrigin   = "https://app.example.com"
	testFP       = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
	testAddr     = "198.51.100.7"
	testAppleApp = "ABCDE12345.com.example.wallet"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is an appliance slice with real components: bbolt in a temp dir,
// a root key, custody, session tokens, the audit log, the service and its
// handlers behind echo.
type env struct {
	t        testing.TB
	e        *echo.Echo
	svc      *Service
	db       *store.DB
	custody  *enclave.Custody
	sessions *enclave.SessionTokens
	audit    *audit.Log
	auditDir string
	clock    *clock
	logs     *syncBuffer
	auth     *softauthn.Authenticator
}

func testOptions() Options {
	return Options{RelyingParties: []RelyingParty{{
		ID: testRPID, Name: "Example Wallet", Origins: []string{testOrigin},
		AndroidApps: []AndroidApp{{Package: "com.example.wallet", Fingerprints: []string{testFP}}},
		AppleAppIDs: []string{testAppleApp},
	}}}
}

func newEnv(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	auditDir := filepath.Join(dir, "audit")
	al, err := audit.Open(ctx, audit.Options{Dir: auditDir, AnchorKey: root.Subkey("audit-anchor"), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = al.Close(context.Background()) })
	custody := enclave.NewCustody(db, root, enclave.CustodyOptions{Clock: clk.Now})
	logs := &syncBuffer{}
	opts := testOptions()
	if mod != nil {
		mod(&opts)
	}
	svc, err := NewService(opts, Deps{DB: db, Custody: custody, Audit: al, Clock: clk.Now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	sessions := root.SessionTokens(clk.Now)
	e := echo.New()
	e.HideBanner = true
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = errorHandler
	h := &Handler{Service: svc, Sessions: sessions}
	h.Register(e.Group(""))
	h.RegisterAdmin(e.Group("/v1/admin"))
	return &env{t: t, e: e, svc: svc, db: db, custody: custody, sessions: sessions, audit: al, auditDir: auditDir,
		clock: clk, logs: logs, auth: softauthn.New([16]byte{0xad, 0xce, 0x00, 0x02})}
}

// errorHandler is a minimal stand-in for the server's central handler.
func errorHandler(err error, c echo.Context) {
	if e, ok := apierr.As(err); ok {
		if e.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", fmt.Sprint(int(e.RetryAfter.Seconds())))
		}
		_ = c.JSON(e.Status, map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		_ = c.JSON(he.Code, map[string]any{"error": map[string]string{"code": "http", "message": fmt.Sprint(he.Message)}})
		return
	}
	_ = c.JSON(500, map[string]any{"error": map[string]string{"code": "internal", "message": "internal error"}})
}

type resp struct {
	status int
	body   []byte
	header http.Header
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %s", r.status, r.body)
	}
	return m
}

func (r resp) code() string {
	var m struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.body, &m)
	return m.Error.Code
}

type reqOpt func(*http.Request)

func withBearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func fromAddr(addr string) reqOpt {
	return func(r *http.Request) { r.RemoteAddr = addr + ":40000" }
}

func (v *env) do(method, path string, body any, opts ...reqOpt) resp {
	v.t.Helper()
	var rd *bytes.Reader
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			v.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = testAddr + ":40000"
	for _, o := range opts {
		o(req)
	}
	rec := httptest.NewRecorder()
	v.e.ServeHTTP(rec, req)
	return resp{status: rec.Code, body: rec.Body.Bytes(), header: rec.Header()}
}

func (v *env) token(userID string) string {
	tok, _ := v.sessions.Mint(userID, 10*time.Minute)
	return tok
}

// beginRegistration returns the ceremony id and the publicKey options.
func (v *env) beginRegistration(userID string, body map[string]any) (string, []byte) {
	v.t.Helper()
	r := v.do("POST", "/v1/passkeys/registration/begin", body, withBearer(v.token(userID)))
	if r.status != 200 {
		v.t.Fatalf("registration/begin: %d %s", r.status, r.body)
	}
	var out struct {
		CeremonyID string          `json:"ceremonyId"`
		PublicKey  json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		v.t.Fatal(err)
	}
	return out.CeremonyID, out.PublicKey
}

// register registers a passkey made by a (v.auth when nil) and stores key.
func (v *env) register(a *softauthn.Authenticator, userID string, key []byte, o softauthn.CreateOptions) *softauthn.Credential {
	v.t.Helper()
	if a == nil {
		a = v.auth
	}
	id, opts := v.beginRegistration(userID, nil)
	cred, c, err := a.CreateWith(opts, testOrigin, o)
	if err != nil {
		v.t.Fatal(err)
	}
	body := map[string]any{"ceremonyId": id, "credential": json.RawMessage(cred)}
	if key != nil {
		body["key"] = base64.StdEncoding.EncodeToString(key)
	}
	r := v.do("POST", "/v1/passkeys/registration/finish", body)
	if r.status != 201 {
		v.t.Fatalf("registration/finish: %d %s", r.status, r.body)
	}
	return c
}

type begun struct {
	CeremonyID string          `json:"ceremonyId"`
	PublicKey  json.RawMessage `json:"publicKey"`
	Nonce      string          `json:"nonce"`
}

func (v *env) beginAuth(body map[string]any, opts ...reqOpt) begun {
	v.t.Helper()
	r := v.do("POST", "/v1/passkeys/authentication/begin", body, opts...)
	if r.status != 200 {
		v.t.Fatalf("authentication/begin: %d %s", r.status, r.body)
	}
	var b begun
	if err := json.Unmarshal(r.body, &b); err != nil {
		v.t.Fatal(err)
	}
	return b
}

func user(id string) map[string]any { return map[string]any{"userId": id} }

// assert signs b's options with o and finishes; it returns the answer.
func (v *env) assert(a *softauthn.Authenticator, b begun, origin string, o softauthn.GetOptions, extra map[string]any, opts ...reqOpt) resp {
	v.t.Helper()
	if a == nil {
		a = v.auth
	}
	cred, err := a.GetWith(b.PublicKey, origin, o)
	if err != nil {
		v.t.Fatal(err)
	}
	body := map[string]any{"ceremonyId": b.CeremonyID, "credential": json.RawMessage(cred)}
	for k, x := range extra {
		body[k] = x
	}
	return v.do("POST", "/v1/passkeys/authentication/finish", body, opts...)
}

// release runs begin+finish for userID and returns the key.
func (v *env) release(a *softauthn.Authenticator, userID string, o softauthn.GetOptions) []byte {
	v.t.Helper()
	r := v.assert(a, v.beginAuth(user(userID)), testOrigin, o, nil)
	if r.status != 200 {
		v.t.Fatalf("authentication/finish: %d %s", r.status, r.body)
	}
	var out struct {
		Key    string `json:"key"`
		UserID string `json:"userId"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		v.t.Fatal(err)
	}
	if out.UserID != userID {
		v.t.Fatalf("released for %q, want %q", out.UserID, userID)
	}
	k, err := base64.StdEncoding.DecodeString(out.Key)
	if err != nil {
		v.t.Fatal(err)
	}
	return k
}

// auditLines returns the audit log's lines (after the log made them durable).
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

func testKey(seed byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}
