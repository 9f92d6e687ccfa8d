package server

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/store"
)

const testAdminKey = apptest.AdminKey

// reply is an answer as received (apptest.Reply).
type reply = apptest.Reply

type harness struct {
	*apptest.Client
	t       testing.TB
	srv     *Server
	db      *store.DB
	audit   *audit.Log
	issuer  *firebasetest.Issuer
	tpm     *tpmdev.Counting
	custody *enclave.Custody
	core    *apptest.Core
}

type harnessOpt func(*config.Config, *Options)

// newHarness runs the real server on loopback with the simulator, a bbolt
// file, the audit log (apptest.NewCore), and a Firebase issuer stand-in
// for project "proj-a".
func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	return newHarnessOn(t, nil, opts...)
}

// newHarnessOn is newHarness over a core made with coreOpts (another store
// backend, say).
func newHarnessOn(t testing.TB, coreOpts []apptest.CoreOption, opts ...harnessOpt) *harness {
	t.Helper()
	return newNode(t, coreOpts, firebasetest.NewIssuer(t, "proj-a"), opts...)
}

// newNode is newHarnessOn with the given Firebase issuer (nodes of one
// cluster trust the same one).
func newNode(t testing.TB, coreOpts []apptest.CoreOption, issuer *firebasetest.Issuer, opts ...harnessOpt) *harness {
	t.Helper()
	ctx := context.Background()
	core := apptest.NewCore(t, coreOpts...)
	cfg := apptest.Config()
	cfg.Firebase.ProjectIDs = []string{"proj-a", "proj-b"}
	v, err := firebase.New(ctx, firebase.Options{ProjectIDs: cfg.Firebase.ProjectIDs, CertsURL: issuer.URL(), Clock: issuer.Clock().Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	custody := enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{Clock: issuer.Clock().Now})
	o := Options{Config: cfg, DB: core.DB, Custody: custody, Sessions: core.Root.SessionTokens(issuer.Clock().Now), Audit: core.Audit, Clock: issuer.Clock().Now,
		Receipts: core.BatchKey != nil}
	for _, f := range opts {
		f(&o.Config, &o)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Keys == nil && o.Custody != nil {
		ks, err := keys.New(keys.Options{Custody: o.Custody, Audit: o.Audit, Metrics: o.Metrics, Clock: o.Clock, Logger: o.Logger})
		if err != nil {
			t.Fatal(err)
		}
		o.Keys = ks
	}
	if o.BlockList, err = LoadBlockList(ctx, o.DB); err != nil {
		t.Fatal(err)
	}
	if o.Firebase == nil && o.Keys != nil {
		if o.Firebase, err = firebase.NewHTTP(firebase.HTTPOptions{Keys: o.Keys, Verifier: v, Blocked: o.BlockList.Has,
			OverwriteMaxAuthAge: o.Config.Firebase.OverwriteMaxAuthAge, Events: audit.NewOwnerIndex(core.AuditDir)}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Public)
	t.Cleanup(hs.Close)
	return &harness{Client: &apptest.Client{T: t, URL: hs.URL}, t: t, srv: srv, db: core.DB, audit: core.Audit, issuer: issuer, tpm: core.TPM, custody: custody, core: core}
}

func (h *harness) advance(d time.Duration) { h.issuer.Clock().Advance(d) }

// keyRequest is the body of PUT /v1/firebase/key as a client sends it.
type keyRequest struct {
	Key string `json:"key"`
}

// releaseRequest is the body of POST /v1/firebase/key/release.
type releaseRequest struct {
	RecipientPublicKey string `json:"recipientPublicKey"`
}
