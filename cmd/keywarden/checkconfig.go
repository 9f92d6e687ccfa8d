package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/server/passkey"
	"github.com/keywarden/keywarden/server/portal"
)

// validateForServe is the validation `serve` applies beyond the
// configuration's own: each service's options are built from the
// configuration exactly as serve builds them (passkeyOptions,
// firebaseOptions, custodianOptions, portalOptions) and checked with that
// service's Validate. `config check` and `serve` both call it, so the
// check refuses what serve would refuse, before any TPM, store or network
// is touched. Errors name the configuration setting.
func validateForServe(cfg config.Config) error {
	var errs []error
	if cfg.Dev {
		if err := devLoopbackOnly(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Passkey.RPID != "" {
		if err := passkeyOptions(cfg.Passkey).Validate(); err != nil {
			errs = append(errs, renameOptionError(err, passkey.ErrInvalidOptions, "passkey", passkeyFields))
		}
	}
	if len(cfg.Firebase.ProjectIDs) > 0 {
		o := firebaseOptions(cfg.Firebase)
		if err := o.Validate(); err != nil {
			errs = append(errs, renameFirebaseError(err))
		}
	}
	if cfg.Vault.Addr != "" {
		if err := custodianOptions(cfg.Vault).Validate(); err != nil {
			errs = append(errs, renameVaultError(err))
		}
	}
	if o, on, err := portalOptions(cfg); err != nil {
		errs = append(errs, err)
	} else if on {
		if err := o.Validate(); err != nil {
			errs = append(errs, renameOptionError(err, portal.ErrInvalidOptions, "portal", portalFields))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
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
	names := map[string]string{"approle.role_id": "role_id", "approle.secret_id": "secret_id", "cert": "cert_file", "cert.mount": "cert_mount", "approle.mount": "approle_mount"}
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
