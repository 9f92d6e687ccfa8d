package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/custodianapi"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/passkey"
	"github.com/keywarden/keywarden/store"
)

const (
	testCustodian = "custodian-acme"
	testRPID      = "localhost"
	testOrigin    = "https://localhost" // what iOS puts in clientDataJSON for the RP
	testProject   = "proj-portal"
	testSecret    = "webhook-secret-0123456789abcdef"
	testSecret2   = "webhook-secret-rotated-fedcba9876"
)

// portalAPI is a stand-in for Portal's API in its real wire format: GET
// /api/v3/clients/me with a bearer answers the client's description. It
// counts the calls it receives.
type portalAPI struct {
	srv   *httptest.Server
	calls atomic.Int64

	mu      sync.Mutex
	clients map[string][2]string // credential → {client id, custodian id}
	status  int                  // when not 0, every call answers this
	gate    chan struct{}        // when not nil, calls wait for it to close
}

func newPortalAPI(t testing.TB) *portalAPI {
	t.Helper()
	p := &portalAPI{clients: map[string][2]string{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *portalAPI) serve(w http.ResponseWriter, r *http.Request) {
	p.calls.Add(1)
	p.mu.Lock()
	gate, status := p.gate, p.status
	p.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if r.URL.Path != ClientsMePath || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"stand-in"}`))
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	c, known := p.clients[tok]
	p.mu.Unlock()
	if !ok || !known {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"Unauthorized"}`))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": c[0], "custodian": map[string]any{"id": c[1], "name": "Acme"},
		"createdAt": "2026-01-01T00:00:00.000Z", "environment": map[string]any{"id": "env-1", "name": "prod"},
		"ejectedAt": nil, "isAccountAbstracted": false, "metadata": map[string]any{"namespaces": map[string]any{}},
		"wallets": []any{},
	})
}

func (p *portalAPI) add(cred, clientID, custodianID string) {
	p.mu.Lock()
	p.clients[cred] = [2]string{clientID, custodianID}
	p.mu.Unlock()
}

func (p *portalAPI) setStatus(s int) {
	p.mu.Lock()
	p.status = s
	p.mu.Unlock()
}

// hold makes calls wait until the returned release is called (also at
// the test's end, so a failing test never hangs on a held call).
func (p *portalAPI) hold(t testing.TB) (release func()) {
	g := make(chan struct{})
	p.mu.Lock()
	p.gate = g
	p.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			p.mu.Lock()
			p.gate = nil
			p.mu.Unlock()
			close(g)
		})
	}
	t.Cleanup(release)
	return release
}

func (p *portalAPI) url() string { return p.srv.URL }

// harness is the real server with the adapter in process (appserver: bbolt,
// a root key without the TPM, the audit log), a Firebase issuer stand-in,
// the passkey service, and (when asked) the custodian service on a real
// Vault dev server.
type harness struct {
	*appserver.App
	t       testing.TB
	srv     *server.Server
	api     *portalAPI
	issuer  *firebasetest.Issuer
	custody *enclave.Custody
	adapter *Adapter
	pk      *passkey.Service
	auth    *softauthn.Authenticator
	vault   *vaultdev.Server // with harnessOptions.vault
}

type harnessOptions struct {
	vault  bool
	portal func(*Options)
	// custodianAPI adds the custodian admin routes over the same share
	// service (with vault), as the appliance wires them.
	custodianAPI bool
	// core adds options to the core (another store backend).
	core []apptest.CoreOption
}

func newHarness(t testing.TB, ho harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, auth: softauthn.New([16]byte{0xad, 0xce})}
	h.issuer = firebasetest.NewIssuer(t, testProject)
	clock := h.issuer.Clock().Now
	v, err := firebase.New(context.Background(), firebase.Options{ProjectIDs: []string{testProject}, CertsURL: h.issuer.URL(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h.App = appserver.New(t, appserver.Core(append([]apptest.CoreOption{apptest.NoTPM()}, ho.core...)...), appserver.Clock(clock), appserver.Firebase(v),
		appserver.Configure(func(cfg *config.Config) { cfg.Firebase.ProjectIDs = []string{testProject} }),
		appserver.ServerOptions(func(o *server.Options) { o.Logger = log }),
		appserver.Before(func(a *appserver.App, so *server.Options) {
			pk, err := passkey.NewService(passkey.Options{RelyingParties: []passkey.RelyingParty{{ID: testRPID, Origins: []string{testOrigin}}}},
				passkey.Deps{DB: a.DB, Custody: a.Custody, Audit: a.Audit, Logger: log, Clock: clock, Keys: a.Keys})
			if err != nil {
				t.Fatal(err)
			}
			h.api = newPortalAPI(t)
			opts := Options{APIURL: h.api.url(), CustodianID: testCustodian, WebhookSecrets: []secret.String{secret.NewString(testSecret), secret.NewString(testSecret2)}}
			if ho.portal != nil {
				ho.portal(&opts)
			}
			deps := Deps{Passkey: pk, Logger: log, Clock: clock, Keys: a.Keys, Firebase: a.Firebase, Audit: a.Audit, Custody: a.Custody}
			if ho.vault {
				h.vault = vaultdev.Start(t)
				svc := newShares(t, h.vault, a.DB)
				deps.Shares = svc
				if ho.custodianAPI {
					ch, err := custodianapi.New(custodianapi.Options{Service: svc, DB: a.DB, Audit: a.Audit, Registry: so.Metrics.Registry})
					if err != nil {
						t.Fatal(err)
					}
					so.Custodian, so.Users = ch, append(so.Users, ch)
				}
			}
			ad, err := New(opts, deps)
			if err != nil {
				t.Fatal(err)
			}
			h.pk, h.adapter = pk, ad
			so.Portal = ad
		}))
	h.srv, h.custody = h.Server, h.Custody
	h.Client.Header = http.Header{"Accept": {"application/json"}, "Content-Type": {"application/json"}}
	return h
}

// newShares is the custodian service on a real Vault dev server.
func newShares(t testing.TB, vs *vaultdev.Server, db *store.DB) *custodian.Service {
	t.Helper()
	vc, err := custodian.New(context.Background(), custodian.Options{Addr: vs.Addr(), Token: secret.NewString(vs.RootToken()),
		KeyName: vaultdev.KeyName, Timeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vc.Close)
	svc := custodian.NewService(vc, db, custodian.ServiceOptions{})
	t.Cleanup(svc.Close)
	return svc
}

// reply is an answer as received; decode it with DecodeStrict (every
// member of v must be in the body and no other: what the SDK's Codable
// types need, and more).
type reply = apptest.Reply

// do sends a request as the SDK does: JSON headers, a trace id, the
// client credential, and extra header pairs.
func (h *harness) do(method, path, cred string, body any, headers ...string) reply {
	h.t.Helper()
	hd := []string{"X-Portal-Trace-Id", "trace-" + strings.ReplaceAll(path, "/", "-")}
	if cred != "" {
		hd = append(hd, "Authorization", "Bearer "+cred)
	}
	return h.Do(method, path, body, append(hd, headers...)...)
}

func (h *harness) advance(d time.Duration) { h.issuer.Clock().Advance(d) }

// mustStatus fails unless r has the status (and, when given, the code).
var mustStatus = apptest.Want

// noSecret fails if the body holds any of the secrets.
func noSecret(t testing.TB, r reply, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && bytes.Contains(r.Body, []byte(s)) {
			t.Fatalf("the answer %d holds a secret: %s", r.Status, r.Body)
		}
	}
}
