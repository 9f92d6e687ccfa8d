package passkey

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/server/keys"
)

const (
	testRPID     = "example.com"
	testOrigin   = "https://app.example.com"
	testFP       = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
	testAddr     = "198.51.100.7"
	testAppleApp = "ABCDE12345.com.example.wallet"
)

// env is an appliance slice with real components (apptest.NewCore: bbolt
// in a temp dir, a root key, the audit log), custody, session tokens, the
// service and its handlers behind echo, and an in-process client.
type env struct {
	*apptest.Core
	*apptest.Client
	t        testing.TB
	e        *echo.Echo
	svc      *Service
	custody  *enclave.Custody
	metrics  *metrics.Metrics // the keys service's
	sessions *enclave.SessionTokens
	clock    *firebasetest.Clock // settable
	logs     *proc.SyncBuffer
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
	return newEnvOn(t, mod, []apptest.CoreOption{apptest.NoTPM()}, firebasetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)))
}

// newEnvOn is newEnv over a core made with coreOpts, on the clock clk
// (nodes of one cluster share it).
func newEnvOn(t testing.TB, mod func(*Options), coreOpts []apptest.CoreOption, clk *firebasetest.Clock) *env {
	t.Helper()
	core := apptest.NewCore(t, coreOpts...)
	custody := enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{Clock: clk.Now})
	logs := &proc.SyncBuffer{}
	opts := testOptions()
	if mod != nil {
		mod(&opts)
	}
	m := metrics.New()
	ks, err := keys.New(keys.Options{Custody: custody, Audit: core.Audit, Metrics: m, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(opts, Deps{DB: core.DB, Custody: custody, Audit: core.Audit, Clock: clk.Now, Keys: ks,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	sessions := core.Root.SessionTokens(clk.Now)
	e := echo.New()
	e.HideBanner = true
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = errorHandler
	h := &Handler{Service: svc, Sessions: sessions}
	// The passkey rows of the server's routes tables.
	e.POST("/v1/passkeys/registration/begin", h.RegistrationBegin)
	e.POST("/v1/passkeys/registration/finish", h.RegistrationFinish)
	e.POST("/v1/passkeys/authentication/begin", h.AuthenticationBegin)
	e.POST("/v1/passkeys/authentication/finish", h.AuthenticationFinish)
	e.GET("/.well-known/apple-app-site-association", h.AppleAppSiteAssociation)
	e.GET("/.well-known/assetlinks.json", h.AssetLinks)
	e.GET("/v1/admin/users/:userId/passkeys", h.AdminList)
	e.DELETE("/v1/admin/users/:userId/passkeys/:credentialId", h.AdminRevoke)
	e.POST("/v1/admin/users/:userId/passkeys/reset", h.AdminReset)
	client := &apptest.Client{T: t, Handler: e, Header: http.Header{"Content-Type": {"application/json"}},
		Prepare: func(r *http.Request) { r.RemoteAddr = testAddr + ":40000" }}
	return &env{Core: core, Client: client, t: t, e: e, svc: svc, custody: custody, sessions: sessions, metrics: m,
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

// resp is an answer as received.
type resp = apptest.Reply

type reqOpt = func(*http.Request)

func withBearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func fromAddr(addr string) reqOpt {
	return func(r *http.Request) { r.RemoteAddr = net.JoinHostPort(addr, "40000") }
}

func (v *env) token(userID string) string {
	tok, _ := v.sessions.Mint(userID, 10*time.Minute)
	return tok
}

// beginRegistration returns the ceremony id and the publicKey options.
func (v *env) beginRegistration(userID string, body map[string]any) (string, []byte) {
	v.t.Helper()
	r := v.Send("POST", "/v1/passkeys/registration/begin", body, withBearer(v.token(userID)))
	if r.Status != 200 {
		v.t.Fatalf("registration/begin: %d %s", r.Status, r.Body)
	}
	var out struct {
		CeremonyID string          `json:"ceremonyId"`
		PublicKey  json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
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
	r := v.Send("POST", "/v1/passkeys/registration/finish", body)
	if r.Status != 201 {
		v.t.Fatalf("registration/finish: %d %s", r.Status, r.Body)
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
	r := v.Send("POST", "/v1/passkeys/authentication/begin", body, opts...)
	if r.Status != 200 {
		v.t.Fatalf("authentication/begin: %d %s", r.Status, r.Body)
	}
	var b begun
	if err := json.Unmarshal(r.Body, &b); err != nil {
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
	return v.Send("POST", "/v1/passkeys/authentication/finish", body, opts...)
}

// release runs begin+finish for userID and returns the key.
func (v *env) release(a *softauthn.Authenticator, userID string, o softauthn.GetOptions) []byte {
	v.t.Helper()
	r := v.assert(a, v.beginAuth(user(userID)), testOrigin, o, nil)
	if r.Status != 200 {
		v.t.Fatalf("authentication/finish: %d %s", r.Status, r.Body)
	}
	var out struct {
		Key    string `json:"key"`
		UserID string `json:"userId"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
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

func testKey(seed byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}
