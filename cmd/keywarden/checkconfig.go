package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/passkey"
	"github.com/keywarden/keywarden/server/portal"
)

// loadConfig parses the command's flags (-config and those extra adds),
// loads the configuration (defaults, file, environment, then the
// configuration's own rules, config.Validate) and checks the sections that
// configure a service with that service's own rules (checkServices).
// Every command loads its configuration here, so `config check` refuses
// exactly what `serve` refuses, before any TPM, store or network is
// touched.
func loadConfig(args []string, dev bool, extra ...func(*flag.FlagSet)) (config.Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet("keywarden", flag.ContinueOnError)
	path := fs.String("config", os.Getenv("KEYWARDEN_CONFIG"), "configuration file (YAML)")
	for _, f := range extra {
		f(fs)
	}
	if err := fs.Parse(args); err != nil {
		return config.Config{}, nil, usageError(err.Error())
	}
	base := config.Defaults()
	if dev {
		base = config.DevDefaults()
	}
	c, err := config.Load(base, *path, os.Environ())
	if err != nil {
		return c, fs, err
	}
	return c, fs, checkServices(c)
}

// checkServices checks each section that configures a service by building
// the service's options from it exactly as serve does (the mappers below:
// one mapping per service, used by both) and calling that service's own
// Validate: one rule per setting, the service's. Errors name the setting.
func checkServices(cfg config.Config) error {
	var errs []error
	for _, check := range []func(config.Config) error{checkDev, checkStore, checkPasskey, checkFirebase, checkVault, checkPortal, checkJoinPolicy} {
		if err := check(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
}

func checkDev(cfg config.Config) error {
	if !cfg.Dev {
		return nil
	}
	return devLoopbackOnly(cfg)
}

func checkPasskey(cfg config.Config) error {
	if cfg.Passkey.RPID == "" {
		return nil // passkeys off
	}
	if err := passkeyOptions(cfg.Passkey).Validate(); err != nil {
		return renameOptionError(err, passkey.ErrInvalidOptions, "passkey", passkeyFields)
	}
	return nil
}

func checkFirebase(cfg config.Config) error {
	if len(cfg.Firebase.ProjectIDs) == 0 {
		return nil // Firebase off
	}
	o := firebaseOptions(cfg.Firebase)
	if err := o.Validate(); err != nil {
		return renameFirebaseError(err)
	}
	return nil
}

func checkVault(cfg config.Config) error {
	if cfg.Vault.Addr == "" {
		return nil // custodian shares off
	}
	if err := custodianOptions(cfg.Vault).Validate(); err != nil {
		return renameVaultError(err)
	}
	return nil
}

func checkPortal(cfg config.Config) error {
	o, on, err := portalOptions(cfg)
	if err != nil || !on {
		return err
	}
	if err := o.Validate(); err != nil {
		return renameOptionError(err, portal.ErrInvalidOptions, "portal", portalFields)
	}
	return nil
}

// The mappers: each section onto its service's options, as serve builds
// them (wire_*.go) and checkServices checks them.

// passkeyOptions maps the passkey section onto the service's options: one
// relying party.
func passkeyOptions(c config.Passkey) passkey.Options {
	rp := passkey.RelyingParty{ID: c.RPID, Name: c.RPName, Origins: c.Origins, AppleAppIDs: c.AppleAppIDs}
	if len(c.AndroidFingerprints) > 0 {
		if c.AndroidPackage != "" {
			rp.AndroidApps = []passkey.AndroidApp{{Package: c.AndroidPackage, Fingerprints: c.AndroidFingerprints}}
		} else {
			for _, fp := range c.AndroidFingerprints {
				if b, err := passkey.ParseFingerprint(fp); err == nil {
					rp.Origins = append(rp.Origins, passkey.AndroidOrigin(b))
				}
			}
		}
	}
	o := passkey.Options{
		RelyingParties: []passkey.RelyingParty{rp}, UserVerification: c.UserVerification,
		CeremonyTTL: c.CeremonyTTL, MaxCeremonies: c.MaxCeremonies, MaxCeremoniesPerAddress: c.MaxPerAddress,
		AllowReset: c.ResetEnabled,
	}
	if c.FailuresPerUser > 0 {
		o.UserFailureBurst = c.FailuresPerUser
		o.UserFailureInterval = 15 * time.Minute / time.Duration(c.FailuresPerUser)
	}
	return o
}

// firebaseOptions maps the firebase section onto the verifier's options:
// a certificate file, when set, replaces the URL.
func firebaseOptions(c config.Firebase) firebase.Options {
	o := firebase.Options{
		ProjectIDs: c.ProjectIDs, Tenants: c.Tenants, Leeway: c.Leeway, MaxAuthAge: c.MaxAuthAge,
		AllowedProviders: c.AllowedProviders, RequireEmailVerified: c.RequireEmailVerified, MaxStale: c.MaxStale,
	}
	if c.CertsFile != "" {
		o.CertsFile = c.CertsFile
	} else {
		o.CertsURL = c.CertsURL
	}
	return o
}

// custodianOptions maps the vault section onto the client's options. The
// auth method follows from which credential is set (config validation
// allows exactly one).
func custodianOptions(c config.Vault) custodian.Options {
	o := custodian.Options{
		Addr: c.Addr, CACert: c.CACert,
		TransitMount: c.TransitMount, KeyName: c.KeyName, Timeout: c.Timeout,
		Namespace: c.Namespace, MaxRetries: c.MaxRetries, MaxConcurrent: c.MaxConcurrent,
	}
	switch {
	case c.Auth == string(custodian.AuthTPMCert):
		// The key (TPMCert.Key) is the TPM's; the wiring loads it.
		o.Auth = custodian.AuthTPMCert
		o.TPMCert = custodian.TPMCertAuth{CertFile: c.TLSCertFile}
	case c.RoleID != "":
		o.Auth = custodian.AuthAppRole
		o.AppRole = custodian.AppRoleAuth{RoleID: c.RoleID, SecretID: c.SecretID}
	case c.CertFile != "":
		o.Auth = custodian.AuthCert
		o.Cert = custodian.CertAuth{CertFile: c.CertFile, KeyFile: c.KeyFile}
	default:
		o.Auth = custodian.AuthToken
		o.Token = c.Token
	}
	return o
}

// portalOptions maps the portal section onto the adapter's options; on is
// false when the drop-in is off (no portal.custodian_id).
func portalOptions(cfg config.Config) (o portal.Options, on bool, err error) {
	p := cfg.Portal
	if p.CustodianID == "" {
		if len(p.WebhookSecrets) > 0 {
			return o, false, errors.New("portal.custodian_id: required when portal.webhook_secrets is set")
		}
		return o, false, nil
	}
	return portal.Options{
		APIURL: p.APIURL, CustodianID: p.CustodianID,
		WebhookSecrets: p.WebhookSecrets, WebhookAllowedIPs: p.WebhookAllowedIPs,
		IdentityTTL: p.IdentityTTL, AllowClientMismatch: p.ClientMismatch == "allow",
		OverwriteMaxAuthAge: cfg.Firebase.OverwriteMaxAuthAge,
	}, true, nil
}

// Option fields (indices removed) → the settings they come from.
var (
	passkeyFields = map[string]string{
		"relyingParties.id":                       "passkey.rp_id",
		"relyingParties.name":                     "passkey.rp_name",
		"relyingParties.origins":                  "passkey.origins",
		"relyingParties.androidApps.package":      "passkey.android_package",
		"relyingParties.androidApps.fingerprints": "passkey.android_fingerprints",
		"relyingParties.appleAppIds":              "passkey.apple_app_ids",
		"userVerification":                        "passkey.user_verification",
		"ceremonyTTL":                             "passkey.ceremony_ttl",
		"maxCeremonies":                           "passkey.max_ceremonies",
		"maxCeremoniesPerAddress":                 "passkey.max_ceremonies_per_address",
		"userFailureBurst":                        "passkey.failures_per_user",
		"userFailureInterval":                     "passkey.failures_per_user",
	}
	portalFields = map[string]string{
		"apiURL":              "portal.api_url",
		"custodianID":         "portal.custodian_id",
		"webhookSecrets":      "portal.webhook_secrets",
		"webhookAllowedIPs":   "portal.webhook_allowed_ips",
		"identityTTL":         "portal.identity_ttl",
		"overwriteMaxAuthAge": "firebase.overwrite_max_auth_age",
	}
	indices = regexp.MustCompile(`\[\d+\]`)
)

// renameOptionError turns "<pkg>: invalid options: field: message" into
// "setting: message" (or "section: field: message" for a field no setting
// feeds).
func renameOptionError(err, prefix error, section string, fields map[string]string) error {
	msg, ok := strings.CutPrefix(err.Error(), prefix.Error()+": ")
	if !ok {
		return fmt.Errorf("%s: %w", section, err)
	}
	field, rest, _ := strings.Cut(msg, ": ")
	if name, ok := fields[indices.ReplaceAllString(field, "")]; ok {
		return fmt.Errorf("%s: %s", name, rest)
	}
	return fmt.Errorf("%s: %s", section, msg)
}

// renameFirebaseError names the setting in the Firebase verifier's
// refusal (its messages name what is wrong in words).
func renameFirebaseError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "firebase: ")
	for _, m := range []struct{ word, name string }{
		{"certs_url", "firebase.certs_url"}, {"certs_file", "firebase.certs_file"},
		{"project id", "firebase.project_ids"}, {"tenant", "firebase.tenants"},
		{"sign-in provider", "firebase.allowed_providers"}, {"leeway", "firebase.leeway"},
		{"max auth age", "firebase.max_auth_age"}, {"max stale", "firebase.max_stale"},
	} {
		if strings.Contains(msg, m.word) {
			return fmt.Errorf("%s: %s", m.name, msg)
		}
	}
	return fmt.Errorf("firebase: %s", msg)
}

// renameVaultError names the settings in the Vault client's refusals (one
// per line, "field: message").
func renameVaultError(err error) error {
	names := map[string]string{"approle.role_id": "role_id", "approle.secret_id": "secret_id", "cert": "cert_file", "cert.mount": "cert_mount", "approle.mount": "approle_mount", "tpm-cert": "auth"}
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		field, rest, ok := strings.Cut(line, ": ")
		if !ok {
			out = append(out, fmt.Errorf("vault: %s", line))
			continue
		}
		if n, ok := names[field]; ok {
			field = n
		}
		out = append(out, fmt.Errorf("vault.%s: %s", field, rest))
	}
	return errors.Join(out...)
}
