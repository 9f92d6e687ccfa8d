// Package config loads Keywarden's configuration: defaults, then a YAML
// file, then the environment, then validation. A bad field stops start-up
// with a message naming it.
//
// # Environment
//
// Every setting has an environment name: KEYWARDEN_ plus its path in upper
// snake case (vault.addr → KEYWARDEN_VAULT_ADDR, firebase.project_ids →
// KEYWARDEN_FIREBASE_PROJECT_IDS). Lists are comma-separated. Every secret
// also has a …_FILE form that names a file holding it (systemd
// LoadCredential=); surrounding white space is trimmed. Some settings have
// an alias (KEYWARDEN_FIREBASE_PROJECT_ID, KEYWARDEN_PORTAL_WEBHOOK_SECRET).
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/secret"
)

// Config is the whole configuration. Field tags: `key` is the name in the
// file and the environment; `alias` adds an environment name.
type Config struct {
	// Dev is set by `keywarden dev`, never by a file.
	Dev bool `key:"-"`

	Listen   Listen   `key:"listen"`
	Data     Data     `key:"data"`
	Store    Store    `key:"store"`
	Etcd     Etcd     `key:"etcd"`
	Cluster  Cluster  `key:"cluster"`
	TPM      TPM      `key:"tpm"`
	Admin    Admin    `key:"admin"`
	Session  Session  `key:"session"`
	Limits   Limits   `key:"limits"`
	Keys     Keys     `key:"keys"`
	Passkey  Passkey  `key:"passkey"`
	Firebase Firebase `key:"firebase"`
	Vault    Vault    `key:"vault"`
	Portal   Portal   `key:"portal"`
	Audit    Audit    `key:"audit"`
	Recovery Recovery `key:"recovery"`
	Rollback Rollback `key:"rollback"`
	PIN      PIN      `key:"pin"`
	Log      Log      `key:"log"`

	// ClusterJoin is the cluster section's join settings (cluster.join_policy).
	ClusterJoin ClusterJoin `key:"cluster"`
}

// PIN configures PIN release with a guess limit (/v1/pin, server/pin).
type PIN struct {
	// Enabled mounts the /v1/pin routes (default true).
	Enabled bool `key:"enabled"`
	// DefaultGuessLimit is a registration's guess limit when it names
	// none (1–255, default 10).
	DefaultGuessLimit int `key:"default_guess_limit"`
	// PendingTTL is how long a begun registration waits for its PUT
	// (default 5m).
	PendingTTL time.Duration `key:"pending_ttl"`
	// RecoveryTTL is how long a recovery may be unlocked, and how long a
	// successful unlock allows replacing the registration (default 5m).
	RecoveryTTL time.Duration `key:"recovery_ttl"`
}

// Rollback configures the TPM rollback counter and the store generation it follows.
type Rollback struct {
	// MinInterval is the least time between two increments of the TPM's
	// NV counter. Every change to the store advances the generation; the
	// increments are coalesced to at most one per interval whatever the
	// write rate (NV writes wear the TPM; keywarden_rollback_nv_increments_total
	// counts them). A copy of the store older than this is caught.
	MinInterval time.Duration `key:"min_interval"`
	// Node is this appliance's name when several appliances share one
	// store (store.backend etcd): each node then keeps its own rollback
	// record and its own TPM counter follows the cluster's generation.
	// Empty (the default) is the single-node scheme. Letters, digits,
	// '.', '_' and '-', up to 64; unique per node, and kept across
	// restarts (a renamed node is a new node).
	Node string `key:"node"`
}

// Recovery configures the T-of-N recovery shares made at init (decisions/16).
type Recovery struct {
	Recipients       []string `key:"recipients"`         // operators' age recipients (age1…)
	Threshold        int      `key:"threshold"`          // shares needed; 0: a majority
	AllowSingleShare bool     `key:"allow_single_share"` // N = 1 on purpose
	SharesDir        string   `key:"shares_dir"`         // default <data.dir>/recovery-shares
}

// Listen is the network edge (decisions/18, decisions/19).
type Listen struct {
	Addr              string        `key:"addr"`       // public: client, SDK, webhook, health routes
	AdminAddr         string        `key:"admin_addr"` // admin routes and /metrics; loopback by default
	TLSCert           string        `key:"tls_cert"`
	TLSKey            string        `key:"tls_key"`
	AdminClientCA     string        `key:"admin_client_ca"` // optional mTLS for the admin listener
	PlainHTTP         bool          `key:"plain_http"`      // explicit opt-out of TLS (behind a TLS-terminating LB)
	TrustedProxies    []string      `key:"trusted_proxies"` // CIDRs whose X-Forwarded-For and PROXY headers are believed
	ReadHeaderTimeout time.Duration `key:"read_header_timeout"`
	ReadTimeout       time.Duration `key:"read_timeout"`
	WriteTimeout      time.Duration `key:"write_timeout"`
	IdleTimeout       time.Duration `key:"idle_timeout"`
	ShutdownTimeout   time.Duration `key:"shutdown_timeout"`
	DrainDelay        time.Duration `key:"drain_delay"` // /readyz is 503 this long before the listener closes
	MaxConcurrent     int           `key:"max_concurrent"`
	CORSOrigins       []string      `key:"cors_origins"` // browser origins allowed on client routes (never *)
}

// Data is where state lives.
type Data struct {
	Dir string `key:"dir"`
	DB  string `key:"db"` // default <dir>/keywarden.db
}

// TPM selects the TPM.
type TPM struct {
	// Path is a device (/dev/tpmrm0), "tcp://host:port" (swtpm), or
	// "simulator" (dev builds only).
	Path string `key:"path"`
	// PCRs the root key is sealed to at init (SHA-256 bank). Required
	// outside dev mode unless AllowNoPCRPolicy.
	PCRs []int `key:"pcrs"`
	// AllowNoPCRPolicy lets a root key sealed without a PCR policy (bound
	// to this TPM only: a stolen machine unseals it whatever it boots) be
	// created and served outside dev mode. `keywarden status` and the admin
	// readiness flag it.
	AllowNoPCRPolicy bool `key:"allow_no_pcr_policy"`
	// AttestPCRs are quoted by /v1/attestation.
	AttestPCRs []int `key:"attest_pcrs"`
	// SimulatorSeed seeds the simulated TPM of dev mode (0: the built-in
	// public dev seed). Another seed is another "TPM": data sealed under
	// one does not unseal under the other.
	SimulatorSeed int64 `key:"simulator_seed"`
}

// Admin authenticates the customer's backend.
type Admin struct {
	// KeyHashes are "sha256:<hex>" of the admin API keys.
	KeyHashes []string `key:"key_hashes"`
	// Key is a plain-text admin key: dev mode's convenience only.
	Key secret.String `key:"key"`
}

// Session configures user session tokens minted by the admin API.
type Session struct {
	TTL    time.Duration `key:"ttl"`
	MaxTTL time.Duration `key:"max_ttl"`
}

// Limits bound what one client can take.
type Limits struct {
	MaxBodyBytes  int64   `key:"max_body_bytes"`
	RatePerSecond float64 `key:"rate_per_second"` // per client address
	RateBurst     int     `key:"rate_burst"`
	// UserDeletesPerMinute bounds admin user deletions (each advances the
	// rollback generation and, coalesced, the TPM's NV counter, whose
	// writes wear the TPM; decisions/13). Beyond it: 429.
	UserDeletesPerMinute int `key:"user_deletes_per_minute"`
}

// Keys is the key custody policy.
type Keys struct {
	VersionRetention time.Duration `key:"version_retention"`
	// ImportClaimWindow is how long a PASSKEY key brought in by the admin
	// import may be claimed by the first passkey registered for its owner
	// with a session token alone; 0 disables claiming.
	ImportClaimWindow time.Duration `key:"import_claim_window"`
}

// Passkey configures the WebAuthn relying party.
type Passkey struct {
	RPID                string        `key:"rp_id"`
	RPName              string        `key:"rp_name"`
	Origins             []string      `key:"origins"`
	AndroidPackage      string        `key:"android_package"`
	AndroidFingerprints []string      `key:"android_fingerprints"` // SHA-256 of signing certs, colon-hex or base64url
	AppleAppIDs         []string      `key:"apple_app_ids"`        // TEAMID.bundle.id, for the AASA file
	UserVerification    string        `key:"user_verification"`    // required | preferred | discouraged
	CeremonyTTL         time.Duration `key:"ceremony_ttl"`
	MaxCeremonies       int           `key:"max_ceremonies"`
	MaxPerAddress       int           `key:"max_ceremonies_per_address"`
	FailuresPerUser     int           `key:"failures_per_user"` // per 15 minutes
	ResetEnabled        bool          `key:"reset_enabled"`
}

// Firebase configures Firebase ID-token verification.
type Firebase struct {
	ProjectIDs           []string      `key:"project_ids" alias:"KEYWARDEN_FIREBASE_PROJECT_ID"`
	Tenants              []string      `key:"tenants"`
	CertsURL             string        `key:"certs_url"`
	CertsFile            string        `key:"certs_file"`
	Leeway               time.Duration `key:"leeway"`
	MaxAuthAge           time.Duration `key:"max_auth_age"`
	MaxStale             time.Duration `key:"max_stale"`
	AllowedProviders     []string      `key:"allowed_providers"`
	RequireEmailVerified bool          `key:"require_email_verified"`
	// OverwriteMaxAuthAge, when set, refuses an overwrite unless the
	// sign-in (auth_time) is at most this old (409 key_exists).
	OverwriteMaxAuthAge time.Duration `key:"overwrite_max_auth_age"`
}

// Vault configures custodian-share wrapping by Vault Transit.
type Vault struct {
	Addr string `key:"addr"`
	// Auth is "" (the method follows from the credential that is set) or
	// "tpm-cert": TLS certificate auth with the client key resident in the
	// TPM and the certificate in TLSCertFile; no Vault secret is configured.
	Auth          string        `key:"auth"`
	TLSCertFile   string        `key:"tls_cert_file"`
	Token         secret.String `key:"token"`
	RoleID        string        `key:"role_id"`
	SecretID      secret.String `key:"secret_id"`
	CertFile      string        `key:"cert_file"`
	KeyFile       string        `key:"key_file"`
	CACert        string        `key:"ca_cert"`
	TransitMount  string        `key:"transit_mount"`
	KeyName       string        `key:"key_name"`
	Timeout       time.Duration `key:"timeout"`
	Namespace     string        `key:"namespace"`      // Vault Enterprise namespace
	MaxRetries    int           `key:"max_retries"`    // per call, on network errors, 5xx and sealed
	MaxConcurrent int           `key:"max_concurrent"` // calls in flight at once; beyond, callers wait (bounded by their context)
}

// Portal configures the Portal SDK drop-in.
type Portal struct {
	APIURL            string          `key:"api_url"`
	CustodianID       string          `key:"custodian_id"`
	WebhookSecrets    []secret.String `key:"webhook_secrets" alias:"KEYWARDEN_PORTAL_WEBHOOK_SECRET"`
	WebhookAllowedIPs []string        `key:"webhook_allowed_ips"`
	IdentityTTL       time.Duration   `key:"identity_ttl"`
	ClientMismatch    string          `key:"client_mismatch"` // refuse | allow
}

// Audit configures the hash-chained audit log.
type Audit struct {
	Dir          string        `key:"dir"` // default <data.dir>/audit
	WriteTimeout time.Duration `key:"write_timeout"`
	MaxFileBytes int64         `key:"max_file_bytes"`
	// SyncReleases makes a release wait for its audit line's fsync. Off
	// (default): the line is written, in chain order, before the key goes
	// out, and its group fsync starts at once (a window of one fsync);
	// stores, deletes and admin actions always wait for durability.
	SyncReleases bool `key:"sync_releases"`
	// ReleaseSyncDelay lets more release lines join one background fsync;
	// the window in which a released key's line is written but not yet
	// durable is this plus one fsync.
	ReleaseSyncDelay time.Duration `key:"release_sync_delay"`
	// AnchorInterval and AnchorLines: an anchor (HMAC'd and signed by the
	// batch key) is written every interval while lines are written, and
	// as soon as anchor_lines lines were written since the last (0: off).
	// Lines after the last anchor are not yet covered by a signature.
	AnchorInterval time.Duration `key:"anchor_interval"`
	AnchorLines    int           `key:"anchor_lines"`
}

// Log configures structured logs.
type Log struct {
	Level  string `key:"level"`  // debug | info | warn | error
	Format string `key:"format"` // json | text
}

// Defaults are the production defaults.
func Defaults() Config {
	return Config{
		Listen: Listen{
			Addr: ":8443", AdminAddr: "127.0.0.1:8421",
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second,
			IdleTimeout: 60 * time.Second, ShutdownTimeout: 20 * time.Second, DrainDelay: 5 * time.Second,
			MaxConcurrent: 1024,
		},
		Data:     Data{Dir: "/var/lib/keywarden"},
		Store:    Store{Backend: "bbolt"},
		Etcd:     Etcd{Prefix: "keywarden", DialTimeout: 5 * time.Second, MaxRequestBytes: 1536 << 10},
		Cluster:  Cluster{PeerListen: "127.0.0.1:2380", ClientListen: "127.0.0.1:2379", StartTimeout: time.Minute},
		TPM:      TPM{Path: "/dev/tpmrm0"},
		Session:  Session{TTL: 10 * time.Minute, MaxTTL: time.Hour},
		Limits:   Limits{MaxBodyBytes: 64 << 10, RatePerSecond: 50, RateBurst: 100, UserDeletesPerMinute: 60},
		Keys:     Keys{VersionRetention: 30 * 24 * time.Hour, ImportClaimWindow: 30 * 24 * time.Hour},
		Passkey:  Passkey{RPName: "Keywarden", UserVerification: "required", CeremonyTTL: 5 * time.Minute, MaxCeremonies: 100000, MaxPerAddress: 64, FailuresPerUser: 10},
		Firebase: Firebase{CertsURL: "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com", Leeway: time.Minute, MaxStale: 24 * time.Hour},
		Vault:    Vault{TransitMount: "transit", KeyName: "keywarden-custodian", Timeout: 5 * time.Second, MaxRetries: 2, MaxConcurrent: 32},
		Portal:   Portal{APIURL: "https://api.portalhq.io", IdentityTTL: 5 * time.Minute, ClientMismatch: "refuse"},
		Audit: Audit{WriteTimeout: 2 * time.Second, MaxFileBytes: 64 << 20, ReleaseSyncDelay: 5 * time.Millisecond,
			AnchorInterval: time.Minute, AnchorLines: 10000},
		Rollback: Rollback{MinInterval: time.Second},
		PIN:      PIN{Enabled: true, DefaultGuessLimit: 10, PendingTTL: 5 * time.Minute, RecoveryTTL: 5 * time.Minute},
		Log:      Log{Level: "info", Format: "json"},
	}
}

// DevDefaults are `keywarden dev`'s embedded defaults: a simulated TPM, a
// local data folder, plain HTTP on loopback, a demo relying party.
func DevDefaults() Config {
	c := Defaults()
	c.Dev = true
	c.Listen.Addr = "127.0.0.1:8420"
	c.Listen.AdminAddr = "127.0.0.1:8420"
	c.Listen.PlainHTTP = true
	c.Listen.DrainDelay = 0
	c.Data.Dir = "keywarden-data"
	c.TPM.Path = "simulator"
	c.TPM.AttestPCRs = []int{16}
	c.Passkey.RPID = "localhost"
	c.Passkey.RPName = "Keywarden (dev)"
	c.Passkey.Origins = []string{"http://localhost:8420"}
	c.Listen.CORSOrigins = []string{"http://localhost:8420"}
	c.Log.Format = "text"
	return c
}

// Load applies the file (when path is not empty) and then the environment
// on top of base, and validates the result.
func Load(base Config, path string, env []string) (Config, error) {
	c := base
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		if err := applyYAML(&c, b); err != nil {
			return c, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, env); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	c.resolve()
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// resolve fills values derived from others (before validation).
func (c *Config) resolve() {
	if c.Data.DB == "" && c.Data.Dir != "" {
		c.Data.DB = filepath.Join(c.Data.Dir, "keywarden.db")
	}
	if c.Audit.Dir == "" && c.Data.Dir != "" {
		c.Audit.Dir = filepath.Join(c.Data.Dir, "audit")
	}
	c.Cluster.resolve()
	for i, p := range c.Firebase.ProjectIDs {
		c.Firebase.ProjectIDs[i] = strings.TrimSpace(p)
	}
}

// ExactOrigin accepts one exact web origin, scheme://host[:port], as a
// browser sends it in Origin: https, or http for a loopback host. A
// wildcard ("*", "https://*", "https://*.example.com") or any other pattern
// is refused: a CORS allow-list that matches more than the operator's own
// pages lets any site that matches call the client API from its users'
// browsers.
func ExactOrigin(o string) error {
	if strings.ContainsAny(o, "*?{}()|^$\\ ") {
		return fmt.Errorf("%q is a pattern; list each web origin exactly (scheme://host[:port])", o)
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.Hostname() == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return fmt.Errorf("%q is not an exact origin (scheme://host[:port], no path, no trailing slash)", o)
	}
	if strings.ToLower(o) != o {
		return fmt.Errorf("%q: write the origin in lower case, as browsers send it", o)
	}
	switch u.Scheme {
	case "https":
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); !(h == "localhost" || (ip != nil && ip.IsLoopback())) {
			return fmt.Errorf("%q: http origins are accepted only for loopback hosts; use https", o)
		}
	default:
		return fmt.Errorf("%q: the scheme must be https (or http on loopback)", o)
	}
	return nil
}
