package firebase_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/firebase"
)

// A handler's view: verify the bearer token, then use the owner string.
// (Compiled, not run: it would fetch Google's certificates.)
func ExampleVerifier_Verify() {
	ctx := context.Background()
	v, err := firebase.New(ctx, firebase.Options{
		ProjectIDs: []string{"my-project"},
		Tenants:    []string{""}, // tokens without a tenant only
		MaxAuthAge: 0,            // no step-up by default
		Leeway:     time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	id, err := v.Verify(ctx, "<the token after Bearer >")
	if e, ok := apierr.As(err); ok {
		// 401 with e.Code such as "token_expired"; 503 firebase_keys_unavailable.
		log.Printf("refused: %d %s", e.Status, e.Code)
		return
	}
	log.Printf("owner %s", id.Owner()) // firebase:my-project//<uid>

	// An overwrite that requires a sign-in within the last 5 minutes.
	if err := v.CheckAuthAge(id, 5*time.Minute); errors.Is(err, firebase.ErrAuthTooOld) {
		log.Print("ask the user to sign in again")
	}
}
