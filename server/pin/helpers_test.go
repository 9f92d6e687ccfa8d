package pin

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/cloudflare/circl/oprf"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/firebase"
)

// env is a whole appliance in process (appserver: the simulator, bbolt,
// the root key, the audit log, the real server) with the rollback counter
// open and the PIN routes wired as cmd/keywarden wires them.
type env struct {
	*appserver.App
	t      testing.TB
	issuer *firebasetest.Issuer
	rb     *enclave.Rollback
	svc    *Service
	logs   *proc.SyncBuffer // the server's and the service's logs, debug level
}

type envOpt func(*Deps)

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	ctx := context.Background()
	issuer := firebasetest.NewIssuer(t, "proj-a")
	v, err := firebase.New(ctx, firebase.Options{ProjectIDs: []string{"proj-a"}, CertsURL: issuer.URL(), Clock: issuer.Clock().Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	e := &env{t: t, issuer: issuer, logs: &proc.SyncBuffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.App = appserver.New(t, appserver.Core(apptest.Seed(16)), appserver.Firebase(v),
		appserver.ServerOptions(func(o *server.Options) { o.Logger = logger }),
		appserver.Before(func(a *appserver.App, o *server.Options) {
			// A long interval: only Sync (a guess) increments the counter
			// during a test.
			rb, err := enclave.InitRollback(ctx, a.TPM, a.DB, a.Root, enclave.RollbackOptions{Interval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rb.Close() })
			e.rb = rb
			o.Rollback = rb
			d := Deps{DB: a.DB, Custody: a.Custody, Keys: a.Keys, Rollback: rb, Logger: logger}
			for _, f := range opts {
				f(&d)
			}
			svc, err := New(Options{}, d)
			if err != nil {
				t.Fatal(err)
			}
			e.svc = svc
			h, err := NewHandler(HandlerOptions{Service: svc, Firebase: a.Firebase, Sessions: a.Sessions})
			if err != nil {
				t.Fatal(err)
			}
			o.PIN = h
			o.Users = append(o.Users, Users{svc})
		}))
	return e
}

// token is a Firebase ID token for uid.
func (e *env) token(uid string) string {
	return e.issuer.Mint(firebasetest.Claims{"sub": uid, "user_id": uid})
}

func fbOwner(uid string) enclave.Owner { return enclave.Owner("firebase:proj-a//" + uid) }

func (e *env) call(method, path, tok string, body any) apptest.Reply {
	e.t.Helper()
	return e.Do(method, path, body, "Authorization", "Bearer "+tok)
}

// client is an app's side of the protocol, in Go over circl (the
// server's code is not used): blind, finalize, derive the unlock tag.
type client struct{ c oprf.Client }

func newClient() client { return client{oprf.NewClient(oprf.SuiteRistretto255)} }

type blinded struct {
	fin  *oprf.FinalizeData
	elem string
}

func (c client) blind(t testing.TB, pin string) blinded {
	t.Helper()
	fin, req, err := c.c.Blind([][]byte{[]byte(pin)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := req.Elements[0].MarshalBinaryCompress()
	if err != nil {
		t.Fatal(err)
	}
	return blinded{fin: fin, elem: base64.RawURLEncoding.EncodeToString(b)}
}

// tag finalizes with the evaluated element and derives the unlock tag
// with the app's own label (HKDF-SHA256).
func (c client) tag(t testing.TB, b blinded, evaluated string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(evaluated)
	if err != nil {
		t.Fatal(err)
	}
	el := oprf.SuiteRistretto255.Group().NewElement()
	if err := el.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	out, err := c.c.Finalize(b.fin, &oprf.Evaluation{Elements: []oprf.Evaluated{el}})
	if err != nil {
		t.Fatal(err)
	}
	tag, err := hkdf.Key(sha256.New, out[0], nil, "example-app pin unlock tag v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tag)
}

// register runs both registration steps for pin and returns the PUT's reply.
func (e *env) register(tok, pin string, body map[string]any) apptest.Reply {
	e.t.Helper()
	c := newClient()
	b := c.blind(e.t, pin)
	r := e.call(http.MethodPost, "/v1/pin/registrations", tok, map[string]any{"blindedElement": b.elem})
	if r.Status != http.StatusCreated {
		e.t.Fatalf("POST /v1/pin/registrations: %d %s", r.Status, r.Body)
	}
	var begin struct{ RegistrationID, EvaluatedElement string }
	r.Decode(e.t, &begin)
	if body == nil {
		body = map[string]any{}
	}
	body["unlockTag"] = c.tag(e.t, b, begin.EvaluatedElement)
	return e.call(http.MethodPut, "/v1/pin/registrations/"+begin.RegistrationID, tok, body)
}

type recovered struct {
	RecoveryID       string `json:"recoveryId"`
	EvaluatedElement string `json:"evaluatedElement"`
	GuessesRemaining int    `json:"guessesRemaining"`
	tag              string
}

// recover starts a recovery with pin; ok reports a 200.
func (e *env) recover(tok, pin string, extra map[string]any) (recovered, apptest.Reply) {
	e.t.Helper()
	c := newClient()
	b := c.blind(e.t, pin)
	body := map[string]any{"blindedElement": b.elem}
	for k, v := range extra {
		body[k] = v
	}
	r := e.call(http.MethodPost, "/v1/pin/recoveries", tok, body)
	var rec recovered
	if r.Status == http.StatusOK {
		r.Decode(e.t, &rec)
		rec.tag = c.tag(e.t, b, rec.EvaluatedElement)
	}
	return rec, r
}

func (e *env) unlock(tok string, rec recovered) apptest.Reply {
	e.t.Helper()
	return e.call(http.MethodPost, "/v1/pin/recoveries/"+rec.RecoveryID+"/unlock", tok, map[string]any{"unlockTag": rec.tag})
}

// try is a whole attempt: recover, then unlock.
func (e *env) try(tok, pin string) apptest.Reply {
	e.t.Helper()
	rec, r := e.recover(tok, pin, nil)
	if r.Status != http.StatusOK {
		return r
	}
	return e.unlock(tok, rec)
}

func (e *env) status(tok string) Status {
	e.t.Helper()
	r := e.call(http.MethodGet, "/v1/pin", tok, nil)
	if r.Status != http.StatusOK {
		e.t.Fatalf("GET /v1/pin: %d %s", r.Status, r.Body)
	}
	var st Status
	r.DecodeStrict(e.t, &st)
	return st
}

func keyOf(t testing.TB, r apptest.Reply) string {
	t.Helper()
	var k struct {
		Key string `json:"key"`
	}
	r.Decode(t, &k)
	if k.Key == "" {
		t.Fatalf("no key in %d %s", r.Status, r.Body)
	}
	return k.Key
}
