package custodianapi

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

const testAdminKey = apptest.AdminKey

// transitPolicy is what a production token holds (custodian/doc.go).
const transitPolicy = `
path "transit/encrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/decrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/rewrap/keywarden-custodian"  { capabilities = ["update"] }
path "transit/keys/keywarden-custodian"    { capabilities = ["read"] }
`

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is the real server on loopback (apptest: simulator-sealed root key,
// bbolt, audit log) with this package's routes over a real Vault dev server.
type env struct {
	*appserver.App
	t       testing.TB
	vault   *vaultdev.Server
	svc     *custodian.Service
	token   string // the Vault token the client uses
	metrics *metrics.Metrics
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
	v := &env{t: t, metrics: metrics.New()}
	v.App = appserver.New(t, appserver.Core(apptest.Seed(13)),
		appserver.Configure(func(cfg *config.Config) {
			if o.maxBody > 0 {
				cfg.Limits.MaxBodyBytes = o.maxBody
			}
		}),
		appserver.ServerOptions(func(so *server.Options) { so.Logger, so.Metrics = quiet, v.metrics }),
		appserver.Before(func(a *appserver.App, so *server.Options) {
			hopts := Options{DB: a.DB, MaxBatchItems: o.maxBatch, Audit: a.Audit, Registry: v.metrics.Registry}
			if !o.noVault {
				hopts.Service = v.startService(a.DB, o)
			}
			h, err := New(hopts)
			if err != nil {
				t.Fatal(err)
			}
			so.Custodian, so.Users = h, append(so.Users, h)
		}))
	return v
}

// startService starts (or reuses) the Vault dev server and returns the
// custodian service on it.
func (v *env) startService(db *store.DB, o envOpts) *custodian.Service {
	t := v.t
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
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
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
	return v.svc
}

type reply = apptest.Reply

var want = apptest.Want

// rawBucket returns every key and value of BucketCustodian.
func (v *env) rawBucket() map[string]string {
	v.t.Helper()
	out := map[string]string{}
	err := v.DB.View(context.Background(), func(tx *store.Tx) error {
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
		r := v.Admin("GET", "/v1/admin/custodian/rewrap/"+id, nil)
		want(v.t, r, 200, "")
		var j custodian.JobStatus
		r.Decode(v.t, &j)
		seen = append(seen, j)
		if j.State != custodian.JobRunning {
			return seen
		}
		time.Sleep(10 * time.Millisecond)
	}
	v.t.Fatalf("job %s still running", id)
	return nil
}
