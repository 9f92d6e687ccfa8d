package portal

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// GET /v1/me/events with Portal credentials (the TBS path's proof: the
// client's credential in Authorization, the user's Firebase ID token in
// X-Firebase-Token) lists that user's events — the TBS store and release —
// and no one else's; the same uid in another project is another owner
// with nothing; a bad credential, a missing or expired token, a token of
// an unconfigured project are refused as on the TBS route.
func TestPortalMeEvents(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.clients()
	alice := h.issuer.Mint(nil)
	bob := h.issuer.Mint(firebasetest.Claims{"sub": "bob-uid", "user_id": "bob-uid"})
	mustStatus(t, h.tbs(http.MethodPut, credA, alice, map[string]string{"encryptionKey": keyHex1}), http.StatusCreated, "")
	mustStatus(t, h.tbs(http.MethodGet, credA, alice, nil), http.StatusOK, "")
	mustStatus(t, h.tbs(http.MethodPut, credA, bob, map[string]string{"encryptionKey": keyHex2}), http.StatusCreated, "")

	events := func(cred, tok string) reply {
		t.Helper()
		return h.do(http.MethodGet, "/v1/me/events", cred, nil, FirebaseTokenHeader, tok)
	}
	var got struct{ Events []audit.OwnerEvent }
	r := events(credA, alice)
	mustStatus(t, r, http.StatusOK, "")
	r.Decode(t, &got)
	if len(got.Events) != 2 || got.Events[0].Action != audit.ActionRelease || got.Events[1].Action != audit.ActionStore {
		t.Fatalf("alice's events: %+v", got.Events)
	}
	for _, e := range got.Events {
		line, err := audit.FindLine([]string{h.Core.AuditDir}, e.Seq)
		if err != nil || !strings.Contains(string(line), `"owner":"firebase:`+testProject+`//`+firebasetest.DefaultSubject+`"`) {
			t.Fatalf("alice was shown line %d: %s (%v)", e.Seq, line, err)
		}
	}
	var bobs struct{ Events []audit.OwnerEvent }
	events(credA, bob).Decode(t, &bobs)
	if len(bobs.Events) != 1 || bobs.Events[0].Seq == got.Events[0].Seq || bobs.Events[0].Seq == got.Events[1].Seq {
		t.Fatalf("bob's events: %+v", bobs.Events)
	}
	// Refused as on the TBS route.
	now := h.issuer.Clock().Now()
	expired := h.issuer.Mint(firebasetest.Claims{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix(), "auth_time": now.Add(-2 * time.Hour).Unix()})
	for _, tc := range []struct {
		name, cred, tok string
		status          int
		code            string
	}{
		{"no credential", "", alice, 401, ErrCredentialMissing.Code},
		{"unknown credential", "pk_unknown", alice, 401, ErrCredentialUnknown.Code},
		{"client of another custodian", credOther, alice, 403, ErrOtherCustodian.Code},
		{"expired token", credA, expired, 401, ""},
		{"token of another project", credA, h.issuer.Mint(firebasetest.Claims{"aud": "elsewhere", "iss": "https://securetoken.google.com/elsewhere"}), 401, ""},
		{"garbage token", credA, "not.a.jwt", 401, ""},
	} {
		r := events(tc.cred, tc.tok)
		mustStatus(t, r, tc.status, tc.code)
		if strings.Contains(string(r.Body), `"events"`) {
			t.Fatalf("%s: events listed: %s", tc.name, r.Body)
		}
	}
}
