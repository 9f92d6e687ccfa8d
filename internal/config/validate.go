package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Validate checks every section, each in its own method; the error names
// the setting ("config: listen.addr: …"). It never changes a value.
//
// The sections that configure a service (passkey, firebase, vault, portal)
// are checked by that service's own Options.Validate, on the options built
// from them: the service holds the one rule for each of its settings, and
// this package does not import the services. cmd/keywarden's loadConfig,
// through which every command (`config check` and `serve` among them)
// loads its configuration, runs both. Here are only the rules the mapping
// onto options itself needs (which Vault auth; portal.client_mismatch).
func (c *Config) Validate() error {
	errs := slices.Concat(
		c.Listen.validate(c.Dev), c.Data.validate(), c.TPM.validate(c.Dev), c.Admin.validate(c.Dev),
		c.Session.validate(), c.Limits.validate(), c.Vault.validate(), c.Portal.validate(),
		c.Recovery.validate(), c.Audit.validate(), c.Log.validate(), c.Keys.validate(), c.Rollback.validate(), c.PIN.validate(),
		c.Store.validate(), c.Etcd.validate(c.Store.Backend), c.Cluster.validate(c.Store.Backend),
		c.ClusterJoin.validate(c.Dev),
	)
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
}

// problems collects a section's refusals, each naming its setting.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// ipOrCIDR reports whether s is an IP address or a CIDR.
func ipOrCIDR(s string) bool {
	_, _, err := net.ParseCIDR(s)
	return err == nil || net.ParseIP(s) != nil
}

func (l Listen) validate(dev bool) (p problems) {
	for _, a := range []struct{ name, addr string }{{"listen.addr", l.Addr}, {"listen.admin_addr", l.AdminAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			p.add(a.name, "%q is not host:port", a.addr)
		}
	}
	if !dev && l.AdminAddr == l.Addr {
		p.add("listen.admin_addr", "must differ from listen.addr outside dev mode: admin routes and /metrics have their own listener (loopback by default)")
	}
	if !l.PlainHTTP && (l.TLSCert == "" || l.TLSKey == "") {
		p.add("listen.tls_cert", "TLS needs listen.tls_cert and listen.tls_key, or set listen.plain_http: true explicitly (behind a TLS-terminating load balancer)")
	}
	if l.AdminClientCA != "" && l.PlainHTTP {
		p.add("listen.admin_client_ca", "client-certificate auth needs TLS")
	}
	for _, s := range l.TrustedProxies {
		if !ipOrCIDR(s) {
			p.add("listen.trusted_proxies", "%q is not an IP or CIDR", s)
		}
	}
	for _, o := range l.CORSOrigins {
		if err := ExactOrigin(o); err != nil {
			p.add("listen.cors_origins", "%v", err)
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"listen.read_header_timeout", l.ReadHeaderTimeout}, {"listen.read_timeout", l.ReadTimeout}, {"listen.write_timeout", l.WriteTimeout}, {"listen.idle_timeout", l.IdleTimeout}} {
		if d.d <= 0 {
			p.add(d.name, "must be positive (a slow client could hold a connection forever)")
		}
	}
	if l.MaxConcurrent < 1 {
		p.add("listen.max_concurrent", "must be at least 1")
	}
	return p
}

func (d Data) validate() (p problems) {
	if d.Dir == "" {
		p.add("data.dir", "must be set")
	}
	return p
}

func (t TPM) validate(dev bool) (p problems) {
	if t.Path == "" {
		p.add("tpm.path", "must be set (/dev/tpmrm0, tcp://host:port, or simulator in dev mode)")
	}
	if t.SimulatorSeed != 0 && t.Path != "simulator" {
		p.add("tpm.simulator_seed", "only applies to tpm.path: simulator")
	}
	if t.Path == "simulator" && !dev {
		p.add("tpm.path", "the simulator is for `keywarden dev` only: its keys are derived from a public seed")
	}
	if !dev && len(t.PCRs) == 0 && !t.AllowNoPCRPolicy {
		p.add("tpm.pcrs", "required outside dev mode: the PCRs the root key is sealed to (e.g. [7] for the Secure Boot state; see docs/OPERATIONS.md); "+
			"to seal to this TPM only, without a PCR policy, set tpm.allow_no_pcr_policy: true")
	}
	for _, i := range slices.Concat(t.PCRs, t.AttestPCRs) {
		if i < 0 || i > 23 {
			p.add("tpm.pcrs", "PCR %d out of range 0..23", i)
		}
	}
	return p
}

func (a Admin) validate(dev bool) (p problems) {
	for _, h := range a.KeyHashes {
		if hexPart, ok := strings.CutPrefix(h, "sha256:"); !ok || len(hexPart) != 64 {
			p.add("admin.key_hashes", "each entry must be sha256:<64 hex digits> (see `keywarden admin-key hash`)")
			break
		}
	}
	if !a.Key.IsZero() && !dev {
		p.add("admin.key", "a plain-text admin key is for dev mode only; configure admin.key_hashes")
	}
	if !a.Key.IsZero() && len(a.Key.Reveal()) < 16 {
		p.add("admin.key", "must be at least 16 characters")
	}
	return p
}

func (k Keys) validate() (p problems) {
	if k.ImportClaimWindow < 0 || k.ImportClaimWindow > 365*24*time.Hour {
		p.add("keys.import_claim_window", "must be 0 (imported passkey keys cannot be claimed) to 8760h (a year); an imported key is claimable with a session token alone for this long")
	}
	return p
}

func (r Rollback) validate() (p problems) {
	if r.MinInterval < 100*time.Millisecond || r.MinInterval > 24*time.Hour {
		p.add("rollback.min_interval", "must be between 100ms and 24h (a restored copy younger than it may go unnoticed; shorter wears the TPM's NV faster)")
	}
	if !validNodeName(r.Node) {
		p.add("rollback.node", "must be empty (one node) or 1 to 64 letters, digits, '.', '_' or '-' (this node's name in the cluster)")
	}
	return p
}

func (n PIN) validate() (p problems) {
	if !n.Enabled {
		return p
	}
	if n.DefaultGuessLimit < 1 || n.DefaultGuessLimit > 255 {
		p.add("pin.default_guess_limit", "must be between 1 and 255")
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"pin.pending_ttl", n.PendingTTL}, {"pin.recovery_ttl", n.RecoveryTTL}} {
		if f.d < time.Second || f.d > time.Hour {
			p.add(f.name, "must be between 1s and 1h")
		}
	}
	return p
}

// validNodeName: empty, or what enclave accepts as a rollback node name.
func validNodeName(n string) bool {
	if len(n) > 64 {
		return false
	}
	for _, c := range []byte(n) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (s Session) validate() (p problems) {
	if s.TTL <= 0 || s.TTL > s.MaxTTL {
		p.add("session.ttl", "must be positive and at most session.max_ttl (%s)", s.MaxTTL)
	}
	return p
}

func (l Limits) validate() (p problems) {
	if l.MaxBodyBytes < 1024 || l.MaxBodyBytes > 16<<20 {
		p.add("limits.max_body_bytes", "must be between 1 KiB and 16 MiB")
	}
	if l.UserDeletesPerMinute < 1 {
		p.add("limits.user_deletes_per_minute", "must be at least 1")
	}
	if l.RatePerSecond <= 0 || l.RateBurst < 1 {
		p.add("limits.rate_per_second", "rate and burst must be positive")
	}
	return p
}

// Vault: the mapping onto the client's options picks the auth method from
// the credential that is set, so exactly one must be; the client checks
// the rest.
func (v Vault) validate() (p problems) {
	if v.Addr == "" {
		return nil
	}
	switch v.Auth {
	case "":
	case "tpm-cert":
		// The TPM key is the only credential: a secret here would be a way
		// in that a copy of the disk carries.
		if v.TLSCertFile == "" {
			p.add("vault.tls_cert_file", "required with vault.auth: tpm-cert (the certificate issued to the TPM client key; see `keywarden vault csr`)")
		}
		if !v.Token.IsZero() || v.RoleID != "" || !v.SecretID.IsZero() || v.CertFile != "" || v.KeyFile != "" {
			p.add("vault.token", "must not be set with vault.auth: tpm-cert (nor role_id, secret_id, cert_file, key_file): the TPM client key is the only Vault credential")
		}
		return p
	default:
		p.add("vault.auth", "must be empty (picked from the credential that is set) or tpm-cert")
		return p
	}
	if v.TLSCertFile != "" {
		p.add("vault.tls_cert_file", "only with vault.auth: tpm-cert (for a key file, use vault.cert_file and vault.key_file)")
	}
	auths := 0
	for _, set := range []bool{!v.Token.IsZero(), v.RoleID != "", v.CertFile != ""} {
		if set {
			auths++
		}
	}
	if auths != 1 {
		p.add("vault.token", "set exactly one Vault auth: vault.token, vault.role_id+vault.secret_id, or vault.cert_file+vault.key_file")
	}
	return p
}

// Portal: the mapping turns client_mismatch into a yes/no, so only the
// two words are accepted; the adapter checks the rest.
func (o Portal) validate() (p problems) {
	switch o.ClientMismatch {
	case "refuse", "allow":
	default:
		p.add("portal.client_mismatch", "must be refuse or allow")
	}
	return p
}

func (r Recovery) validate() (p problems) {
	if r.Threshold < 0 || (len(r.Recipients) > 0 && r.Threshold > len(r.Recipients)) {
		p.add("recovery.threshold", "must be between 0 (a majority) and the number of recipients")
	}
	for _, s := range r.Recipients {
		if !strings.HasPrefix(s, "age1") {
			p.add("recovery.recipients", "%q is not an age recipient (age1…)", s)
		}
	}
	return p
}

func (a Audit) validate() (p problems) {
	if a.ReleaseSyncDelay < 0 || a.ReleaseSyncDelay > 100*time.Millisecond {
		p.add("audit.release_sync_delay", "must be between 0 and 100ms")
	}
	if a.AnchorInterval < time.Second || a.AnchorInterval > time.Hour {
		p.add("audit.anchor_interval", "must be between 1s and 1h")
	}
	if a.AnchorLines < 0 || (a.AnchorLines > 0 && a.AnchorLines < 100) {
		p.add("audit.anchor_lines", "must be 0 (off) or at least 100")
	}
	return p
}

func (l Log) validate() (p problems) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "must be debug, info, warn or error")
	}
	switch l.Format {
	case "json", "text":
	default:
		p.add("log.format", "must be json or text")
	}
	return p
}
