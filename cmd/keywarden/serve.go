package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/attest"
	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/receipt"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/keys"
	"github.com/keywarden/keywarden/server/passkey"
	"github.com/keywarden/keywarden/store"
)

func newLogger(c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// openTPM is the only place a TPM is opened.
func openTPM(ctx context.Context, c config.Config) (transport.TPMCloser, error) {
	if c.TPM.Path == "simulator" {
		if !c.Dev {
			return nil, errors.New("the TPM simulator is for `keywarden dev` only")
		}
		seed := c.TPM.SimulatorSeed
		if seed == 0 {
			seed = tpmsim.DevSeed
		}
		return tpmsim.Open(seed)
	}
	return tpmdev.Open(ctx, c.TPM.Path)
}

// appliance is everything serve and dev open.
type appliance struct {
	cfg     config.Config
	log     *slog.Logger
	tpm     *tpmdev.Counting
	rawTPM  transport.TPMCloser
	db      *store.DB
	root    *enclave.Root
	sealed  string
	audit   *audit.Log
	metrics *metrics.Metrics
	closers []func()

	// noPCRPolicy: the root key is sealed without a PCR policy, allowed by
	// tpm.allow_no_pcr_policy (flagged in the admin readiness).
	noPCRPolicy bool

	firebase *firebase.Verifier // set by wireFirebase when Firebase is configured
	passkey  *passkey.Service   // set by wirePasskey when passkeys are configured
	tls      *certReloader      // made once by tlsReloader

	// On the embedded backend (embedded.go): the node-local state and
	// this node's etcd member; nil otherwise.
	node   *cluster.State
	member *cluster.Embedded

	// The appliance signing key (flushed once the AK certified it) and the
	// batch key it certified (wire_proofs.go); nil when unavailable, why
	// in signWhy.
	signKey  *attest.SigningKey
	batchKey *receipt.BatchKey
	signWhy  string
}

// tlsReloader is the appliance's one TLS certificate reloader, shared by
// the listeners and the attestation route that may bind the TLS key.
func (a *appliance) tlsReloader() (*certReloader, error) {
	if a.tls != nil {
		return a.tls, nil
	}
	r, err := newCertReloader(a.cfg.Listen.TLSCert, a.cfg.Listen.TLSKey, a.log)
	if err != nil {
		return nil, err
	}
	a.tls = r
	a.closers = append(a.closers, r.Close)
	return r, nil
}

func (a *appliance) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// cmdServe runs the appliance on the configured TPM.
func cmdServe(ctx context.Context, args []string) error {
	cfg, accept, err := serveConfig(args, false)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, newLogger(cfg.Log), accept)
}

// cmdDev runs the appliance on dev mode's embedded defaults and the TPM
// simulator. It differs from serve only before the start: the simulator
// must be built in, and an admin key is made up when none is configured.
func cmdDev(ctx context.Context, args []string) error {
	cfg, accept, err := serveConfig(args, true)
	if err != nil {
		return err
	}
	if !tpmsim.Available {
		return errors.New("`keywarden dev` needs a development build with the TPM simulator (cgo); release builds refuse it")
	}
	if cfg.Admin.Key.IsZero() && len(cfg.Admin.KeyHashes) == 0 {
		var b [24]byte
		_, _ = rand.Read(b[:])
		cfg.Admin.Key = secret.NewString("dev-" + base64.RawURLEncoding.EncodeToString(b[:]))
		// Printed once, on purpose: dev mode's only way to learn it.
		fmt.Fprintf(os.Stderr, "keywarden dev: admin API key (shown once): %s\n", cfg.Admin.Key.Reveal())
	}
	return serve(ctx, cfg, newLogger(cfg.Log), accept)
}

// serveConfig loads serve's (or dev's) configuration and its
// -accept-rollback flag: start a store older than the TPM's rollback
// counter, recording a new baseline (audited). Prefer `keywarden rollback
// accept`, which does it once; a flag left in a unit file would accept
// every later rollback too.
func serveConfig(args []string, dev bool) (cfg config.Config, acceptRollback bool, err error) {
	cfg, _, err = loadConfig(args, dev, func(fs *flag.FlagSet) {
		fs.BoolVar(&acceptRollback, "accept-rollback", false, "start a store older than the TPM's rollback counter, recording a new baseline (audited); prefer `keywarden rollback accept`")
	})
	return cfg, acceptRollback, err
}

// serve starts the appliance (startAppliance), then its listeners, and
// serves until ctx ends (listenAndServe drains and closes them).
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, acceptRollback bool) error {
	a, srv, err := startAppliance(ctx, cfg, log, acceptRollback)
	if err != nil {
		return err
	}
	defer a.Close()
	return listenAndServe(ctx, a, srv)
}

// startAppliance is the start of serve and dev, in this order: open the
// TPM → open the store → refuse a root key without a PCR policy → unseal
// the root key (dev: create it) [store.backend embedded instead: the node-
// local state → unseal the root key → cluster CA → etcd member → store,
// see embedded.go] → appliance signing key and batch key → open the audit
// log → [sealed: a server
// that answers health only] → Firebase verifier → clock check → rollback
// check (before anything writes the store) → attestation → client and
// custodian shares → demo page (dev) → passkeys → Portal drop-in → PIN → pprof
// (dev) → the HTTP server. The listeners come after it (listenAndServe).
// Each step adds what it opens to the appliance's closers, which close in
// reverse; on an error everything opened so far is closed.
func startAppliance(ctx context.Context, cfg config.Config, log *slog.Logger, acceptRollback bool) (_ *appliance, _ *server.Server, err error) {
	a := &appliance{cfg: cfg, log: log, metrics: metrics.New()}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := a.openTPM(ctx); err != nil {
		return nil, nil, err
	}
	if a.cfg.Store.Backend == "embedded" {
		// Root key (node-local state) → cluster CA → member → store.
		if err := a.startEmbedded(ctx); err != nil {
			return nil, nil, err
		}
	} else {
		if err := a.openStore(ctx); err != nil {
			return nil, nil, err
		}
		if err := a.checkPCRPolicy(ctx); err != nil {
			return nil, nil, err
		}
		if err := a.unsealRoot(ctx); err != nil {
			return nil, nil, err
		}
	}
	a.startSigningKey(ctx)
	if err := a.openAudit(ctx); err != nil {
		return nil, nil, err
	}
	opts, err := a.serverOptions(ctx)
	if err != nil {
		return nil, nil, err
	}
	if a.root == nil {
		srv, err := server.New(opts) // sealed: health only, nothing else starts
		return a, srv, err
	}
	for _, wire := range []wireStep{
		wireKeys, // the one keys service every key path uses
		wireFirebase,
		wireClockCheck,
		wireRollback(acceptRollback),
		wireAttestation,
		wireCustodian,
		wireDemo,
		wirePasskey,
		wirePortal, // after custodian and passkeys: it serves over both
		wirePIN,    // after Firebase and the rollback counter
		wirePprof,
		wireCluster,      // the embedded backend's member routes
		wireClusterJoins, // on a cluster member only
		wireEtcd,         // etcd backend only: its metrics, status sampler and maintenance snapshot
	} {
		if err := wire(ctx, a, &opts); err != nil {
			return nil, nil, err
		}
	}
	srv, err := server.New(opts)
	if err != nil {
		return nil, nil, err
	}
	return a, srv, nil
}

// A wireStep adds one capability to the server's options. Steps run in
// the order startAppliance lists them; a later one may use what an earlier
// one put in opts or the appliance.
type wireStep func(ctx context.Context, a *appliance, opts *server.Options) error

// openTPM opens the configured TPM (counting its commands).
func (a *appliance) openTPM(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.Data.Dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	raw, err := openTPM(ctx, a.cfg)
	if err != nil {
		return fmt.Errorf("open TPM %s: %w", a.cfg.TPM.Path, err)
	}
	a.rawTPM = raw
	a.tpm = tpmdev.NewCounting(raw)
	a.closers = append(a.closers, func() { raw.Close() })
	a.metrics.CounterFunc("keywarden_tpm_commands_total", "TPM commands sent (a release or store sends none).", func() float64 { return float64(a.tpm.Count()) })
	return nil
}

// openStore opens the configured store backend (openStoreDB): the bbolt
// file, or the etcd cluster.
func (a *appliance) openStore(ctx context.Context) error {
	db, err := openStoreDB(ctx, a.cfg, store.Options{})
	if err != nil {
		return err
	}
	a.db = db
	a.closers = append(a.closers, func() { db.Close() })
	// The backend decides where the state that refuses or permits lives
	// (ceremonies, step-up proofs, failure budgets, the block list): shared
	// and read linearizably on a cluster's store (any backend but bbolt),
	// in this process on bbolt.
	if db.Shared() {
		a.log.Info("single-use and refusal state is shared through the store (any node answers any request); per-address rate limits stay per node")
	} else {
		a.log.Info("single-use and refusal state is kept in this process (one active node)")
	}
	a.metrics.GaugeFunc("keywarden_store_size_bytes", "Size of the bbolt file (0 on etcd).", func() float64 { return float64(db.Stats().Size) })
	a.metrics.CounterFunc("keywarden_store_commits_total", "Store transactions committed (one fsync each).", func() float64 { return float64(db.Stats().Commits) })
	return nil
}

// checkPCRPolicy refuses a root key sealed without a PCR policy unless
// tpm.allow_no_pcr_policy (see checkRootPCRPolicy).
func (a *appliance) checkPCRPolicy(ctx context.Context) error {
	none, err := checkRootPCRPolicy(ctx, a.cfg, a.db)
	if err != nil {
		return err
	}
	a.noPCRPolicy = none
	if none {
		a.log.Warn("the root key is sealed without a PCR policy (tpm.allow_no_pcr_policy: true): a stolen machine unseals it whatever it boots")
	}
	return nil
}

// unsealRoot unseals the root key; in dev mode it creates one when the
// store has none. A root key that does not unseal is not an error: the
// appliance stays sealed and serves health only.
func (a *appliance) unsealRoot(ctx context.Context) error {
	root, err := enclave.Unseal(ctx, a.tpm, a.db)
	switch {
	case errors.Is(err, enclave.ErrNotInitialized) && a.cfg.Dev:
		a.log.Warn("dev mode: creating a root key sealed to the SIMULATED TPM (public seed: INSECURE, for trying Keywarden out only)")
		var rawKey secret.Bytes
		root, rawKey, err = enclave.Initialize(ctx, a.tpm, a.db, enclave.InitOptions{})
		rawKey.Wipe()
		if err != nil {
			return err
		}
	case errors.Is(err, enclave.ErrNotInitialized):
		return err
	case err != nil:
		// Sealed: keep serving health so the operator and the load balancer
		// see why; serve no key. Nothing is destroyed.
		a.log.Error("root key stays sealed; serving health only", "err", err)
		a.sealed = err.Error()
		return nil
	}
	a.root = root
	a.closers = append(a.closers, root.Close)
	if !root.Locked() {
		a.log.Warn("could not lock the root key's memory against swap (raise LimitMEMLOCK)")
	}
	return nil
}

// openAudit opens the audit log under the root key's anchor subkey (none
// while sealed).
func (a *appliance) openAudit(ctx context.Context) error {
	if a.root == nil {
		return nil
	}
	cfg := a.cfg.Audit
	aopts := audit.Options{Dir: cfg.Dir, AnchorKey: a.root.Subkey(enclave.SubkeyAuditAnchor), WriteTimeout: cfg.WriteTimeout, MaxFileBytes: cfg.MaxFileBytes}
	aopts.Heads = audit.StoreHeads(a.db) // each anchored head is recorded in the store: `audit verify` catches a cut log
	if a.node != nil {
		// Embedded cluster: one recorded head per node (each has its own log).
		aopts.Heads = audit.NodeStoreHeads(a.db, a.node.Name)
	}
	aopts.Signer, aopts.Node = a.batchKey, a.nodeName() // signed anchors and receipts (nil: HMAC anchors only)
	aopts.AnchorInterval, aopts.AnchorLines = cfg.AnchorInterval, cfg.AnchorLines
	if !cfg.SyncReleases {
		aopts.WrittenActions = []string{audit.ActionRelease}
		aopts.WrittenSyncDelay = cfg.ReleaseSyncDelay
	}
	alog, err := audit.Open(ctx, aopts)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	a.audit = alog
	a.closers = append(a.closers, func() { _ = alog.Close(context.Background()) })
	registerAuditMetrics(a.metrics, alog)
	return nil
}

// serverOptions are the server's options before any capability is wired:
// the store, metrics, the Firebase block list, the PCR-policy flag and,
// unless sealed, the audit log, key custody and session tokens.
func (a *appliance) serverOptions(ctx context.Context) (server.Options, error) {
	opts := server.Options{Config: a.cfg, Logger: a.log, DB: a.db, Metrics: a.metrics, SealedReason: a.sealed}
	bl, err := server.LoadBlockList(ctx, a.db)
	if err != nil {
		return opts, err
	}
	opts.BlockList = bl
	if a.noPCRPolicy {
		opts.Degraded = append(opts.Degraded, pcrPolicyCheck())
	}
	if a.root == nil {
		opts.Audit = sealedAudit{}
		return opts, nil
	}
	opts.Audit = a.audit
	opts.Receipts = a.batchKey != nil
	opts.Custody = enclave.NewCustody(a.db, a.root, enclave.CustodyOptions{VersionRetention: a.cfg.Keys.VersionRetention})
	opts.Sessions = a.root.SessionTokens(nil)
	return opts, nil
}

func registerAuditMetrics(m *metrics.Metrics, l *audit.Log) {
	m.CounterFunc("keywarden_audit_lines_total", "Audit lines written.", func() float64 { return float64(l.Stats().Lines) })
	m.CounterFunc("keywarden_audit_fsyncs_total", "Audit fsyncs (group commits).", func() float64 { return float64(l.Stats().Fsyncs) })
	m.CounterFunc("keywarden_audit_refusals_dropped_total", "Refusals counted but not written as a line (sampling).", func() float64 { return float64(l.Stats().RefusalsDropped) })
	m.CounterFunc("keywarden_audit_receipts_total", "Release receipts made.", func() float64 { return float64(l.Stats().Receipts) })
	m.CounterFunc("keywarden_audit_receipt_signatures_total", "Batch signatures made for receipts (receipts per signature = receipts_total / this).", func() float64 { return float64(l.Stats().ReceiptBatches) })
	m.CounterFunc("keywarden_audit_head_errors_total", "Anchored audit heads that could not be recorded in the store.", func() float64 { return float64(l.Stats().HeadErrors) })
	m.GaugeFunc("keywarden_audit_healthy", "1 while the audit log can be written.", func() float64 {
		if l.Healthy() {
			return 1
		}
		return 0
	})
}

// sealedAudit stands in while the root key is sealed: nothing that needs
// an audit line can happen then.
type sealedAudit struct{}

func (sealedAudit) Record(context.Context, audit.Event) error { return errors.New("sealed") }
func (sealedAudit) Refusal(context.Context, audit.Event)      {}

func devLoopbackOnly(c config.Config) error {
	for _, addr := range []string{c.Listen.Addr, c.Listen.AdminAddr} {
		host, _, _ := net.SplitHostPort(addr)
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("dev mode listens on loopback only; %s is not a loopback address", addr)
		}
	}
	return nil
}

// errNoPCRPolicy: serve outside dev mode found a root key sealed without a
// PCR policy and tpm.allow_no_pcr_policy is not set.
var errNoPCRPolicy = errors.New("the root key is sealed without a PCR policy (bound to this TPM only: a stolen machine would unseal it whatever it boots); " +
	"stop and run `keywarden reseal -pcrs LIST` (e.g. 7), or set tpm.allow_no_pcr_policy: true to serve it so knowingly")

// checkRootPCRPolicy reads (without a TPM command) the PCRs the stored root
// key is sealed to. Outside dev mode a root key without a PCR policy is
// refused unless tpm.allow_no_pcr_policy; none reports that it was allowed.
// What the key is sealed to counts, not tpm.pcrs: an older init or a
// `reseal -pcrs none` may differ from the configuration.
func checkRootPCRPolicy(ctx context.Context, cfg config.Config, db *store.DB) (none bool, err error) {
	if cfg.Dev {
		return false, nil
	}
	sr, err := enclave.LoadSealedRoot(ctx, db)
	if err != nil {
		return false, nil // not initialized or damaged: Unseal says so
	}
	if len(sr.PCRs) > 0 {
		return false, nil
	}
	if !cfg.TPM.AllowNoPCRPolicy {
		return false, errNoPCRPolicy
	}
	return true, nil
}

// pcrPolicyCheck flags a root key served without a PCR policy in the admin
// readiness (`keywarden status`); the public /readyz leaves it out.
func pcrPolicyCheck() server.Check {
	return server.Check{Name: "pcr_policy", Private: true, Run: func(context.Context) error {
		return errors.New("none: the root key is sealed without a PCR policy (tpm.allow_no_pcr_policy: true); reseal with `keywarden reseal -pcrs LIST`")
	}}
}

// wireKeys builds the appliance's keys service (opts.Keys).
func wireKeys(_ context.Context, a *appliance, opts *server.Options) error {
	ks, err := keys.New(keys.Options{Custody: opts.Custody, Audit: opts.Audit, Metrics: a.metrics, Clock: opts.Clock, Logger: a.log})
	if err != nil {
		return err
	}
	opts.Keys = ks
	return nil
}

func listenAndServe(ctx context.Context, a *appliance, srv *server.Server) error {
	l := a.cfg.Listen
	mk := func(addr string, h http.Handler) *http.Server {
		return &http.Server{
			Addr: addr, Handler: h,
			ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
			WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: 32 << 10,
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		}
	}
	servers := []*http.Server{mk(l.Addr, srv.Public)}
	if srv.Admin != srv.Public {
		servers = append(servers, mk(l.AdminAddr, srv.Admin))
	}
	var tlsReloader *certReloader
	if l.PlainHTTP {
		// SIGHUP reloads TLS; without TLS it must not end the process
		// (systemd's ExecReload sends it).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for range hup {
				a.log.Info("SIGHUP: nothing to reload (plain HTTP)")
			}
		}()
	} else {
		var err error
		tlsReloader, err = a.tlsReloader()
		if err != nil {
			return err
		}
		for i, s := range servers {
			s.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: tlsReloader.GetCertificate}
			if i == 1 && l.AdminClientCA != "" {
				if err := requireClientCerts(s.TLSConfig, l.AdminClientCA); err != nil {
					return err
				}
			}
		}
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		ln, err := listenTCP(s.Addr, l.TrustedProxies, l.ReadHeaderTimeout)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
		if s.TLSConfig != nil {
			ln = tls.NewListener(ln, s.TLSConfig)
		}
		a.log.Info("listening", "addr", ln.Addr().String(), "tls", s.TLSConfig != nil)
		go func() { errc <- s.Serve(ln) }()
	}
	if a.audit != nil {
		v, r, _ := buildInfo()
		_ = a.audit.Record(ctx, audit.Event{Action: audit.ActionStart, Outcome: audit.OutcomeSuccess, Fields: map[string]string{"version": v, "revision": r}})
		// Anchor the start (signed with the new batch key): a public
		// `audit verify` of a node that just started covers it at once.
		_ = a.audit.Anchor(ctx)
	}
	a.log.Info("keywarden serving", "version", versionString(), "dev", a.cfg.Dev, "sealed", a.root == nil)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	// Graceful shutdown: readiness fails first so load balancers drain,
	// then the listeners close and in-flight requests finish.
	srv.Drain()
	a.log.Info("draining", "delay", l.DrainDelay)
	time.Sleep(l.DrainDelay)
	sctx, cancel := context.WithTimeout(context.Background(), l.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	if a.audit != nil {
		_ = a.audit.Record(sctx, audit.Event{Action: audit.ActionStop, Outcome: audit.OutcomeSuccess})
	}
	a.log.Info("stopped")
	return nil
}
