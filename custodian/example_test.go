package custodian_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// A custodian share is stored for (owner, method) and read back; the
// rewrap job is resumed at start. (Not run: it needs a Vault server.)
func Example() {
	ctx := context.Background()
	vault, err := custodian.New(ctx, custodian.Options{
		Addr:    "https://vault.internal:8200",
		CACert:  "/etc/keywarden/vault-ca.pem",
		Auth:    custodian.AuthAppRole,
		AppRole: custodian.AppRoleAuth{RoleID: os.Getenv("ROLE_ID"), SecretID: secret.NewString(os.Getenv("SECRET_ID"))},
	})
	if err != nil {
		log.Fatal(err) // invalid options or credentials; an unreachable Vault is not an error here
	}
	defer vault.Close()

	db, err := store.Open("/var/lib/keywarden/keywarden.db", store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	shares := custodian.NewService(vault, db, custodian.ServiceOptions{VersionRetention: 30 * 24 * time.Hour})
	defer shares.Close()
	if err := shares.ResumeJobs(ctx); err != nil {
		log.Fatal(err)
	}

	if _, err := shares.Put(ctx, "portal:client-123", "PASSKEY-SECP256K1", []byte(`{"share":"…"}`)); err != nil {
		log.Print(err) // *apierr.Error: 503 vault_unavailable, 502 vault_forbidden, …
		return
	}
	all, err := shares.List(ctx, "portal:client-123")
	if err != nil {
		log.Print(err)
		return
	}
	for _, s := range all {
		log.Printf("%s: %d bytes (Transit key v%d)", s.Method, s.Share.Len(), s.KeyVersion)
		s.Share.Wipe()
	}
}
