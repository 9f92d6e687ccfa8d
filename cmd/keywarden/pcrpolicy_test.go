package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmdev/swtpmtest"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

// initRootOn makes the store of cfg with a root key sealed on the TPM at
// spec to pcrs and its rollback counter (what `keywarden init` does,
// without the recovery shares), then closes both.
func initRootOn(t *testing.T, spec string, cfg config.Config, pcrs []int) {
	t.Helper()
	ctx := context.Background()
	tpm, err := tpmdev.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	db, err := store.Open(cfg.Data.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	root, raw, err := enclave.Initialize(ctx, tpm, db, enclave.InitOptions{PCRs: pcrs})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Wipe()
	defer root.Close()
	if err := rollbackInitStep(ctx, initContext{cfg: cfg, tpm: tpm, db: db, root: root, raw: raw}); err != nil {
		t.Fatal(err)
	}
}

// TestPCRPolicyOutsideDev: `init` refuses a configuration without tpm.pcrs;
// `serve` refuses a root key sealed without a PCR policy (an old init, a
// reseal to none) unless tpm.allow_no_pcr_policy is set, and then the admin
// readiness and `keywarden status` say so while the public /readyz does
// not. On swtpm, a TPM outside this process, as in production.
func TestPCRPolicyOutsideDev(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sw := swtpmtest.Start(t, swtpmtest.Options{StateDir: filepath.Join(dir, "tpmstate")})
	body := fmt.Sprintf("listen:\n  plain_http: true\ndata:\n  dir: %s\ntpm:\n  path: %s\n", filepath.Join(dir, "data"), sw.Spec)
	cfgFile := writeConfigFile(t, dir, body)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// init and serve refuse the configuration before touching the TPM.
	for _, cmd := range []string{"init", "serve"} {
		err := run(ctx, []string{cmd, "-config", cfgFile})
		if err == nil || !strings.Contains(err.Error(), "tpm.pcrs") || !strings.Contains(err.Error(), "tpm.allow_no_pcr_policy") {
			t.Fatalf("%s without tpm.pcrs: %v", cmd, err)
		}
	}

	// A root key sealed without a PCR policy (as an init before this rule
	// made it) and a configuration that names PCRs: serve refuses, naming
	// the way out.
	withPCRs := writeConfigFile(t, filepath.Join(dir, "pcrs"), body+"  pcrs: [7]\n")
	cfg, _, err := loadConfig([]string{"-config", withPCRs}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.Data.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	initRootOn(t, sw.Spec, cfg, nil)
	a, _, err := startAppliance(ctx, cfg, log, false)
	if err == nil {
		a.Close()
		t.Fatal("serve opened a root key sealed without a PCR policy")
	}
	if !strings.Contains(err.Error(), "tpm.allow_no_pcr_policy") || !strings.Contains(err.Error(), "reseal") {
		t.Fatalf("refusal does not say what to do: %v", err)
	}

	// The explicit opt-out: serve starts and flags it to the operator.
	allow := writeConfigFile(t, filepath.Join(dir, "allow"), body+"  allow_no_pcr_policy: true\n")
	cfg, _, err = loadConfig([]string{"-config", allow}, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.KeyHashes = []string{server.HashAdminKey(apptest.AdminKey)}
	a, srv, err := startAppliance(ctx, cfg, log, false)
	if err != nil {
		t.Fatalf("serve with tpm.allow_no_pcr_policy: %v", err)
	}
	defer a.Close()
	pub := &apptest.Client{T: t, Handler: srv.Public}
	r := pub.Do("GET", "/readyz", nil)
	if r.Status != 200 || strings.Contains(string(r.Body), "pcr") {
		t.Fatalf("public /readyz = %d %s", r.Status, r.Body)
	}
	adm := &apptest.Client{T: t, Handler: srv.Admin}
	r = adm.Admin("GET", "/v1/admin/readyz", nil)
	var rd statusReport
	r.Decode(t, &rd)
	if r.Status != 200 || rd.Status != "ready" || rd.Checks["pcr_policy"].Status != "degraded" || !strings.Contains(rd.Checks["pcr_policy"].Detail, "none") {
		t.Fatalf("admin readiness does not flag the missing PCR policy: %d %s", r.Status, r.Body)
	}
	hs := httptest.NewServer(srv.Admin)
	defer hs.Close()
	t.Setenv("KEYWARDEN_ADMIN_KEY", apptest.AdminKey)
	out := captureStdout(t, func() error { return cmdStatus(ctx, []string{"-url", hs.URL}) })
	if !strings.Contains(out, "pcr_policy") || !strings.Contains(out, "degraded") {
		t.Fatalf("keywarden status does not flag it:\n%s", out)
	}
}
