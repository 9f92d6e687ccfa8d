// Package appserver runs the real server (server.New) on an httptest
// server over an apptest.Core, for the tests of the packages whose routes
// plug into it. Package server's own tests cannot import it (a cycle) and
// use apptest directly.
package appserver

import (
	"context"
	"github.com/keywarden/keywarden/internal/audit"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/keys"
)

// App is the appliance in process, serving on URL.
type App struct {
	*apptest.Core
	*apptest.Client
	Custody  *enclave.Custody
	Sessions *enclave.SessionTokens
	// Keys is the keys service the server uses, built over Custody, the
	// core's audit log and the server's metrics: capabilities built in
	// Before take it as a dependency.
	Keys *keys.Service
	// Firebase is the native Firebase handler the server uses (Portal's
	// TBS routes verify tokens with it).
	Firebase *firebase.HTTP
	// Metrics are the server's collectors.
	Metrics *metrics.Metrics
	Config  config.Config
	Server  *server.Server
	HTTP    *httptest.Server
	URL     string
}

// Setup is what New builds from; Options change it.
type Setup struct {
	Core   []apptest.CoreOption
	Clock  func() time.Time // custody, session tokens and server; nil: time.Now
	Config config.Config    // apptest.Config()
	Server server.Options   // New fills in Config, DB, Custody, Sessions, Audit, Keys, BlockList, Firebase (and Clock when nil)
	// Firebase verifies the native Firebase routes' tokens; nil: they
	// answer 503 firebase_not_configured.
	Firebase firebase.TokenVerifier
	TLS      bool // serve over TLS; the Client trusts the certificate
	// Before runs before server.New, when the App has its Core, Custody,
	// Sessions, HTTP and URL: for routes built on them (add them to o).
	Before func(a *App, o *server.Options)
}

// Option changes the Setup.
type Option func(*Setup)

// Core passes options to apptest.NewCore.
func Core(o ...apptest.CoreOption) Option {
	return func(s *Setup) { s.Core = append(s.Core, o...) }
}

// Clock sets the clock of custody, session tokens and the server.
func Clock(now func() time.Time) Option { return func(s *Setup) { s.Clock = now } }

// Configure changes the configuration.
func Configure(f func(*config.Config)) Option { return func(s *Setup) { f(&s.Config) } }

// ServerOptions changes server.Options (in the order given with Users
// and Firebase).
func ServerOptions(f func(*server.Options)) Option {
	return func(s *Setup) { f(&s.Server) }
}

// Users adds holders of per-user data.
func Users(u ...server.UserData) Option {
	return func(s *Setup) { s.Server.Users = append(s.Server.Users, u...) }
}

// Firebase sets the Firebase verifier.
func Firebase(v firebase.TokenVerifier) Option {
	return func(s *Setup) { s.Firebase = v }
}

// TLS serves over TLS.
func TLS() Option { return func(s *Setup) { s.TLS = true } }

// Before sets Setup.Before.
func Before(f func(a *App, o *server.Options)) Option {
	return func(s *Setup) { s.Before = f }
}

// New builds the core, then the server with the options, and serves it.
func New(t testing.TB, opts ...Option) *App {
	t.Helper()
	s := Setup{Config: apptest.Config()}
	for _, o := range opts {
		o(&s)
	}
	core := apptest.NewCore(t, s.Core...)
	a := &App{Core: core, Config: s.Config}
	a.Custody = enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{Clock: s.Clock})
	a.Sessions = core.Root.SessionTokens(s.Clock)
	o := s.Server
	o.Config, o.DB, o.Custody, o.Sessions, o.Audit = s.Config, core.DB, a.Custody, a.Sessions, core.Audit
	o.Receipts = core.BatchKey != nil
	if o.Clock == nil {
		o.Clock = s.Clock
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Keys == nil {
		ko := keys.Options{Custody: a.Custody, Audit: core.Audit, Metrics: o.Metrics, Clock: o.Clock, Logger: o.Logger}
		ks, err := keys.New(ko)
		if err != nil {
			t.Fatal(err)
		}
		o.Keys = ks
	}
	a.Keys = o.Keys
	a.Metrics = o.Metrics
	bl, err := server.LoadBlockList(context.Background(), core.DB)
	if err != nil {
		t.Fatal(err)
	}
	o.BlockList = bl
	if o.Firebase == nil {
		fb, err := firebase.NewHTTP(firebase.HTTPOptions{Keys: o.Keys, Verifier: s.Firebase, Blocked: bl.Has,
			OverwriteMaxAuthAge: o.Config.Firebase.OverwriteMaxAuthAge, Events: audit.NewOwnerIndex(core.AuditDir)}) // as the appliance wires it
		if err != nil {
			t.Fatal(err)
		}
		o.Firebase = fb
	}
	a.Firebase = o.Firebase
	hs := httptest.NewUnstartedServer(nil)
	if s.TLS {
		hs.StartTLS()
	} else {
		hs.Start()
	}
	t.Cleanup(hs.Close)
	a.HTTP, a.URL = hs, hs.URL
	a.Client = &apptest.Client{T: t, URL: hs.URL}
	if s.TLS {
		a.Client.HTTP = hs.Client()
	}
	if s.Before != nil {
		s.Before(a, &o)
	}
	a.Config = o.Config
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = srv.Public
	a.Server = srv
	return a
}
