package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netcheck"
)

// Validate checks every section, each in its own method; the error names
// the setting ("config: listen.addr: …"). It never changes a value.
func (c *Config) Validate() error {
	errs := slices.Concat(
		c.Listen.validate(c.Dev), c.Data.validate(), c.TPM.validate(c.Dev), c.Admin.validate(c.Dev),
		c.Session.validate(), c.Limits.validate(), c.Passkey.validate(), c.Firebase.validate(),
		c.Vault.validate(), c.Portal.validate(), c.Recovery.validate(), c.Audit.validate(), c.Log.validate(),
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

func (k Passkey) validate() (p problems) {
	if k.RPID != "" {
		if strings.Contains(k.RPID, "/") || strings.Contains(k.RPID, ":") {
			p.add("passkey.rp_id", "%q must be a bare domain (no scheme, port or path)", k.RPID)
		}
		if len(k.Origins) == 0 && len(k.AndroidFingerprints) == 0 {
			p.add("passkey.origins", "at least one origin is needed when passkey.rp_id is set")
		}
	}
	for _, o := range k.Origins {
		if strings.HasPrefix(o, "android:apk-key-hash:") {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			p.add("passkey.origins", "%q is not an origin (scheme://host[:port]) or android:apk-key-hash:…", o)
		}
	}
	switch k.UserVerification {
	case "required", "preferred", "discouraged":
	default:
		p.add("passkey.user_verification", "must be required, preferred or discouraged")
	}
	if k.CeremonyTTL <= 0 || k.CeremonyTTL > 30*time.Minute {
		p.add("passkey.ceremony_ttl", "must be between 0 and 30m")
	}
	return p
}

func (f Firebase) validate() (p problems) {
	for _, id := range f.ProjectIDs {
		if id == "" || strings.ContainsAny(id, "/ \t\n") {
			p.add("firebase.project_ids", "%q is not a Firebase project id", id)
		}
	}
	if f.CertsURL != "" {
		if u, err := url.Parse(f.CertsURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			p.add("firebase.certs_url", "must be an http(s) URL")
		}
	}
	if f.Leeway < 0 || f.Leeway > 5*time.Minute {
		p.add("firebase.leeway", "must be between 0 and 5m")
	}
	return p
}

func (v Vault) validate() (p problems) {
	if v.Addr != "" {
		// The Vault token and every custodian share cross this connection.
		if err := netcheck.ServiceURL(v.Addr); err != nil {
			p.add("vault.addr", "%v", err)
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
	}
	if v.MaxRetries < 0 || v.MaxRetries > 10 {
		p.add("vault.max_retries", "must be between 0 and 10")
	}
	if v.MaxConcurrent < 1 {
		p.add("vault.max_concurrent", "must be at least 1")
	}
	return p
}

func (o Portal) validate() (p problems) {
	if o.APIURL != "" {
		if u, err := url.Parse(o.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.add("portal.api_url", "must be an http(s) URL")
		}
	}
	for _, s := range o.WebhookSecrets {
		if len(s.Reveal()) < 16 {
			p.add("portal.webhook_secrets", "each secret must be at least 16 characters")
			break
		}
	}
	for _, s := range o.WebhookAllowedIPs {
		if !ipOrCIDR(s) {
			p.add("portal.webhook_allowed_ips", "%q is not an IP or CIDR", s)
		}
	}
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
