package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/clientshares"
	"github.com/keywarden/keywarden/server/custodianapi"
	"github.com/keywarden/keywarden/store"
)

const custodianTestPolicy = `
path "transit/encrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/decrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/rewrap/keywarden-custodian"  { capabilities = ["update"] }
path "transit/keys/keywarden-custodian"    { capabilities = ["read"] }
`

const wireAdminKey = "wire-custodian-admin-key-0123456789"

// wired is an appliance put together the way buildServer does it (a root
// key without a TPM: the wiring does not touch the TPM), with
// wireCustodian's routes, served on loopback.
type wired struct {
	t    *testing.T
	a    *appliance
	opts server.Options
	http *httptest.Server
}

func newWired(t *testing.T, vault config.Vault, db *store.DB) (*wired, error) {
	t.Helper()
	return newWiredTPM(t, vault, db, nil)
}

// newWiredTPM is newWired with a TPM (for vault.auth tpm-cert).
func newWiredTPM(t *testing.T, vault config.Vault, db *store.DB, tpm *tpmdev.Counting) (*wired, error) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if db == nil {
		var err error
		if db, err = store.Open(filepath.Join(dir, "k.db"), store.Options{NoSync: true}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
	}
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(root.Close)
	alog, err := audit.Open(ctx, audit.Options{Dir: filepath.Join(dir, "audit"), AnchorKey: root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close(context.Background()) })
	cfg := config.DevDefaults()
	cfg.Admin.Key = secret.NewString(wireAdminKey)
	cfg.Vault = config.Defaults().Vault
	if vault.Addr != "" {
		cfg.Vault = vault
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := &appliance{cfg: cfg, log: log, tpm: tpm, db: db, root: root, audit: alog, metrics: metrics.New()}
	t.Cleanup(a.Close)
	opts := server.Options{Config: cfg, Logger: log, DB: db, Metrics: a.metrics, Audit: alog,
		Custody: enclave.NewCustody(db, root, enclave.CustodyOptions{}), Sessions: root.SessionTokens(nil)}
	if opts.BlockList, err = server.LoadBlockList(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := wireKeys(ctx, a, &opts); err != nil {
		t.Fatal(err)
	}
	if err := wireCustodian(ctx, a, &opts); err != nil {
		return nil, err
	}
	srv, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Public)
	t.Cleanup(hs.Close)
	return &wired{t: t, a: a, opts: opts, http: hs}, nil
}

func (w *wired) do(method, path string, body any) (int, http.Header, []byte) {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, w.http.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+wireAdminKey)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// readyz returns the status of /readyz and the state of its vault check.
func (w *wired) readyz() (int, string) {
	w.t.Helper()
	code, _, b := w.do("GET", "/readyz", nil)
	var r struct {
		Checks map[string]struct{ Status, Detail string } `json:"checks"`
	}
	_ = json.Unmarshal(b, &r)
	return code, r.Checks["vault"].Status
}

func (w *wired) metric(name string) (float64, bool) {
	w.t.Helper()
	mfs, err := w.a.metrics.Registry.Gather()
	if err != nil {
		w.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestCustodianOptionsFromConfig(t *testing.T) {
	base := config.Vault{Addr: "https://vault:8200", CACert: "/ca.pem", TransitMount: "t", KeyName: "k", Timeout: 3 * time.Second}
	cases := []struct {
		name string
		mod  func(*config.Vault)
		want custodian.AuthMethod
	}{
		{"token", func(v *config.Vault) { v.Token = secret.NewString("hvs.x") }, custodian.AuthToken},
		{"approle", func(v *config.Vault) { v.RoleID, v.SecretID = "role", secret.NewString("sid") }, custodian.AuthAppRole},
		{"cert", func(v *config.Vault) { v.CertFile, v.KeyFile = "/c.pem", "/k.pem" }, custodian.AuthCert},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := base
			c.mod(&v)
			o := custodianOptions(v)
			if o.Auth != c.want || o.Addr != v.Addr || o.CACert != v.CACert || o.TransitMount != "t" || o.KeyName != "k" || o.Timeout != 3*time.Second {
				t.Fatalf("options %+v", o)
			}
			if err := o.Validate(); err != nil {
				t.Fatalf("mapped options do not validate: %v", err)
			}
			switch c.want {
			case custodian.AuthAppRole:
				if o.AppRole.RoleID != "role" || o.AppRole.SecretID.Reveal() != "sid" {
					t.Fatal("AppRole credentials lost")
				}
			case custodian.AuthCert:
				if o.Cert.CertFile != "/c.pem" || o.Cert.KeyFile != "/k.pem" {
					t.Fatal("cert files lost")
				}
			}
		})
	}
}

func TestWireWithoutVault(t *testing.T) {
	w, err := newWired(t, config.Vault{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.opts.Custodian == nil || len(w.opts.Users) != 2 || len(w.opts.Degraded) != 0 {
		t.Fatalf("wired custodian %T, %d users, %d checks", w.opts.Custodian, len(w.opts.Users), len(w.opts.Degraded))
	}
	if _, ok := w.opts.ClientShares.(*clientshares.Handler); !ok {
		t.Fatalf("client shares %T", w.opts.ClientShares)
	}
	if _, err := custodianService(&w.opts); !errors.Is(err, custodianapi.ErrNotConfigured) {
		t.Fatalf("custodianService: %v", err)
	}
	code, _, b := w.do("PUT", "/v1/admin/users/alice/custodian-share", map[string]string{"share": "AQID"})
	if code != 503 || !strings.Contains(string(b), "custodian_not_configured") {
		t.Fatalf("custodian PUT without Vault: %d %s", code, b)
	}
	// Client shares need no Vault.
	code, _, b = w.do("PUT", "/v1/admin/users/alice/client-shares/PASSWORD", map[string]string{"cipherText": "ct"})
	if code != 201 {
		t.Fatalf("client share PUT: %d %s", code, b)
	}
	if code, vault := w.readyz(); code != 200 || vault != "" {
		t.Fatalf("readyz %d, vault check %q", code, vault)
	}
}

func TestWireWithVault(t *testing.T) {
	v := vaultdev.Start(t)
	v.WritePolicy("custodian", custodianTestPolicy)
	cfg := config.Defaults().Vault
	cfg.Addr, cfg.Token, cfg.Timeout = v.Addr(), secret.NewString(v.NewToken(0, "custodian")), 2*time.Second

	// A job left half done by a previous process.
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	jobID := halfDoneJob(t, v, db)

	w, err := newWired(t, cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := custodianService(&w.opts)
	if err != nil || svc == nil {
		t.Fatalf("custodianService: %v", err)
	}
	// ResumeJobs at start finishes it.
	deadline := time.Now().Add(90 * time.Second)
	var j custodian.JobStatus
	for time.Now().Before(deadline) {
		if j, err = svc.JobStatus(context.Background(), jobID); err != nil {
			t.Fatal(err)
		}
		if j.State != custodian.JobRunning {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if j.State != custodian.JobDone || j.Done != j.Total || j.Rewrapped != j.Total {
		t.Fatalf("resumed job %+v", j)
	}
	if n, ok := w.metric("keywarden_custodian_rewrap_done"); !ok || n != float64(j.Total) {
		t.Fatalf("rewrap metric %v %v, want %d", n, ok, j.Total)
	}

	share := base64.StdEncoding.EncodeToString([]byte("custodian share through the wiring"))
	if code, _, b := w.do("PUT", "/v1/admin/users/alice/custodian-share", map[string]string{"share": share}); code != 201 {
		t.Fatalf("PUT: %d %s", code, b)
	}
	code, _, b := w.do("GET", "/v1/admin/users/alice/custodian-share", nil)
	if code != 200 || !strings.Contains(string(b), share) {
		t.Fatalf("GET: %d %s", code, b)
	}
	if n, ok := w.metric("keywarden_vault_calls_total"); !ok || n < 2 {
		t.Fatalf("vault calls metric %v %v", n, ok)
	}
	if code, vault := w.readyz(); code != 200 || vault != "ok" {
		t.Fatalf("readyz %d, vault %q", code, vault)
	}

	// Vault down: readiness stays 200 with vault degraded (decisions/20);
	// the custodian routes answer 503 themselves.
	v.Stop()
	var vault string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, vault = w.readyz(); code != 200 || vault == "degraded" {
			break
		}
	}
	if code != 200 || vault != "degraded" {
		t.Fatalf("readyz with Vault down: %d, vault %q", code, vault)
	}
	if n, ok := w.metric("keywarden_vault_healthy"); !ok || n != 0 {
		t.Fatalf("vault healthy metric %v %v", n, ok)
	}
	code, hdr, b := w.do("GET", "/v1/admin/users/alice/custodian-share", nil)
	if code != 503 || hdr.Get("Retry-After") == "" || strings.Contains(string(b), share) {
		t.Fatalf("GET with Vault down: %d %v %s", code, hdr, b)
	}
}

// halfDoneJob stores shares, rotates the key and stops a rewrap job after
// its first step, as a crash would.
func halfDoneJob(t *testing.T, v *vaultdev.Server, db *store.DB) string {
	t.Helper()
	ctx := context.Background()
	c, err := custodian.New(ctx, custodian.Options{Addr: v.Addr(), Token: secret.NewString(v.RootToken()), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc := custodian.NewService(c, db, custodian.ServiceOptions{JobBatchSize: 1})
	items := make([]custodian.PutItem, 200)
	for i := range items {
		items[i] = custodian.PutItem{Owner: "user:u" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Method: "default", Share: []byte("share")}
	}
	if _, err := svc.PutBatch(ctx, items); err != nil {
		t.Fatal(err)
	}
	v.RotateKey(vaultdev.KeyName)
	id, err := svc.StartRewrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		j, err := svc.JobStatus(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Done > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job made no progress")
		}
	}
	svc.Close()
	j, err := svc.JobStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != custodian.JobRunning || j.Done >= j.Total {
		t.Fatalf("the job was not interrupted half-way: %+v", j)
	}
	return id
}

// A Vault that refuses the configuration does not stop the appliance: the
// custodian routes answer the refusal and /readyz shows it.
func TestWireVaultRefusesToken(t *testing.T) {
	v := vaultdev.Start(t)
	tok := v.NewToken(0)
	v.RevokeToken(tok)
	cfg := config.Defaults().Vault
	cfg.Addr, cfg.Token = v.Addr(), secret.NewString(tok)
	w, err := newWired(t, cfg, nil)
	if err != nil {
		t.Fatalf("start-up failed on a Vault refusal: %v", err)
	}
	_, err = custodianService(&w.opts)
	if e, ok := apierr.As(err); !ok || e.Code != custodian.ErrVaultForbidden.Code {
		t.Fatalf("custodianService: %v", err)
	}
	code, _, b := w.do("GET", "/v1/admin/users/alice/custodian-share", nil)
	if code != 502 || !strings.Contains(string(b), "vault_forbidden") || strings.Contains(string(b), tok) {
		t.Fatalf("GET: %d %s", code, b)
	}
	if code, vault := w.readyz(); code != 200 || vault != "degraded" {
		t.Fatalf("readyz %d, vault %q", code, vault)
	}
	if code, _, _ := w.do("PUT", "/v1/admin/users/alice/client-shares/GDRIVE", map[string]string{"cipherText": "ct"}); code != 201 {
		t.Fatalf("client shares stopped working: %d", code)
	}
}

// AppRole credentials from the config log in.
func TestWireAppRole(t *testing.T) {
	v := vaultdev.Start(t)
	v.WritePolicy("custodian", custodianTestPolicy)
	roleID, secretID := v.EnableAppRole("keywarden", 0, "custodian")
	cfg := config.Defaults().Vault
	cfg.Addr, cfg.RoleID, cfg.SecretID = v.Addr(), roleID, secret.NewString(secretID)
	w, err := newWired(t, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	share := base64.StdEncoding.EncodeToString([]byte("approle share"))
	if code, _, b := w.do("PUT", "/v1/admin/users/bob/custodian-share", map[string]string{"share": share}); code != 201 {
		t.Fatalf("PUT: %d %s", code, b)
	}
	if code, _, b := w.do("GET", "/v1/admin/users/bob/custodian-share", nil); code != 200 || !strings.Contains(string(b), share) {
		t.Fatalf("GET: %d %s", code, b)
	}
}

// An invalid vault section stops start-up with the field named.
func TestWireBadVaultConfig(t *testing.T) {
	cfg := config.Defaults().Vault
	cfg.Addr, cfg.Token, cfg.TransitMount = "http://127.0.0.1:1", secret.NewString("t"), "bad mount!"
	_, err := newWired(t, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "transit_mount") {
		t.Fatalf("got %v, want an error naming transit_mount", err)
	}
}
