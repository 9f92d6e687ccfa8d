// Chromium end-to-end test of the dev-mode passkey demo page (issue 3).
//
// The real keywarden binary runs `keywarden dev` (simulated TPM) on a free
// loopback port with the relying party localhost; Debian's headless
// Chromium opens http://localhost:<port>/demo/ and a DevTools virtual
// authenticator (CTAP2, internal transport, resident keys, user
// verification) stands in for the platform authenticator, so the page's
// navigator.credentials calls make real ES256 signatures that Keywarden
// verifies. The test reads what the page shows, as a person would.
//
//	go test ./internal/e2e/ -run Chromium
//	go test ./internal/e2e/ -run Chromium -artifacts -outputdir /tmp/shots   # keep the screenshots
//
// Without /usr/bin/chromium the test is skipped (it fails under CI=true);
// scripts/setup.sh installs it.
package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// TestChromiumDemo registers a passkey and stores a key through the demo
// page, recovers it (by user id and discoverable), and checks that the page
// gets no key with a forged passkey, a passkey the server does not know, or
// no passkey at all; then a copy of the real passkey on another
// authenticator (a synced passkey) recovers the key again. The steps build
// on each other and stop at the first failure.
func TestChromiumDemo(t *testing.T) {
	chrome := chromiumExecutable(t)
	bin := proc.BuildBinary(t, "./cmd/keywarden")
	kw := chromiumStartKeywarden(t, bin)
	b := chromiumLaunch(t, chrome)
	b.screenshotOnFailure(t, "demo")

	b.do(t, "open the demo page",
		chromedp.Navigate(kw.Origin+"/demo/"),
		chromedp.WaitVisible(chromedp.ID("register")))
	b.enableWebAuthn(t)
	auth := b.addAuthenticator(t)

	userID := "alice-" + hex.EncodeToString(chromiumRandom(4))
	setUserID := func(t *testing.T, id string) {
		t.Helper()
		// (chromedp.SetValue refuses the empty string.)
		js, _ := json.Marshal(id)
		b.do(t, "type the user id", chromedp.Evaluate[chromedp.Void](`document.getElementById("user-id").value = `+string(js)))
	}
	// The page's box: store sealed to the appliance key, release sealed
	// with HPKE to a one-time key of the page (ticked by default).
	setSealed := func(t *testing.T, on bool) {
		t.Helper()
		b.do(t, "tick or untick #sealed", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById("sealed").checked = %v`, on)))
	}
	var stored []byte                // the key the page generated and stored
	var passkey *webauthn.Credential // the registered passkey, private key included

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"Register", func(t *testing.T) {
			setUserID(t, userID)
			out := b.clickAndWait(t, "register")
			if out.State != "registered" || out.ErrorCode != "" {
				t.Fatalf("registration: state %q, status %q, error %q %q", out.State, out.Status, out.ErrorCode, out.Error)
			}
			stored = chromiumDecodeKey(t, "stored key", out.Stored)
			if len(stored) != 32 {
				t.Fatalf("stored key has %d bytes, want 32", len(stored))
			}
			if out.Recovered != "" || out.Match != "" {
				t.Fatalf("a recovered key shows before any recovery: %q %q", out.Recovered, out.Match)
			}
			creds := b.credentials(t, auth)
			if len(creds) != 1 {
				t.Fatalf("the authenticator holds %d credentials, want 1", len(creds))
			}
			c := creds[0]
			if !c.IsResidentCredential || c.RpID != "localhost" || string(c.UserHandle) != userID {
				t.Fatalf("credential: resident %v, RP %q, user handle %q; want a resident credential of localhost for %q",
					c.IsResidentCredential, c.RpID, c.UserHandle, userID)
			}
			passkey = c
		}},
		{"Recover", func(t *testing.T) {
			// Sealed with ML-KEM-768+X25519 to the page's one-time key and
			// opened by the TypeScript client in the browser.
			chromiumExpectKey(t, b.clickAndWait(t, "recover"), stored, true)
		}},
		{"RecoverDiscoverableInTheClear", func(t *testing.T) {
			setUserID(t, "") // authentication/begin {}: the browser offers its passkey
			setSealed(t, false)
			defer setSealed(t, true)
			chromiumExpectKey(t, b.clickAndWait(t, "recover"), stored, false)
		}},
		{"ForgedPasskeyRefused", func(t *testing.T) {
			// The registered credential id and user handle on a new
			// authenticator, with another private key: the browser signs,
			// Keywarden finds the credential and refuses the signature.
			passkey = b.credentials(t, auth)[0] // current sign count, for the last step
			b.removeAuthenticator(t, auth)
			auth = b.addAuthenticator(t)
			b.addCredential(t, auth, chromiumCredential{
				CredentialID: passkey.CredentialID, IsResidentCredential: true, RpID: "localhost",
				PrivateKey: chromiumP256Key(t), UserHandle: passkey.UserHandle, SignCount: passkey.SignCount + 1000,
			})
			setUserID(t, userID)
			chromiumExpectRefused(t, b.clickAndWait(t, "recover"), stored, "credential_unknown") // a bad signature answers as an unknown credential
		}},
		{"UnknownPasskeyRefused", func(t *testing.T) {
			// A discoverable passkey for the same user handle that was never
			// registered with Keywarden.
			b.clearCredentials(t, auth)
			b.addCredential(t, auth, chromiumCredential{
				CredentialID: chromiumRandom(16), IsResidentCredential: true, RpID: "localhost",
				PrivateKey: chromiumP256Key(t), UserHandle: []byte(userID),
			})
			setUserID(t, "")
			chromiumExpectRefused(t, b.clickAndWait(t, "recover"), stored, "credential_unknown")
		}},
		{"NoPasskeyInBrowser", func(t *testing.T) {
			b.clearCredentials(t, auth)
			setUserID(t, userID)
			out := b.clickAndWait(t, "recover")
			chromiumExpectRefused(t, out, stored, "")
			if !strings.HasPrefix(out.ErrorCode, "browser_") {
				t.Fatalf("error code %q, want the browser's refusal (browser_…)", out.ErrorCode)
			}
		}},
		{"SyncedPasskeyRecovers", func(t *testing.T) {
			// The real passkey, copied to another authenticator as a synced
			// passkey would be: the key comes back, so the refusals above
			// were about the passkeys, not a broken page or server.
			b.removeAuthenticator(t, auth)
			auth = b.addAuthenticator(t)
			b.addCredential(t, auth, chromiumCredential{
				CredentialID: passkey.CredentialID, IsResidentCredential: passkey.IsResidentCredential, RpID: passkey.RpID,
				PrivateKey: passkey.PrivateKey, UserHandle: passkey.UserHandle, SignCount: passkey.SignCount,
			})
			setUserID(t, userID)
			chromiumExpectKey(t, b.clickAndWait(t, "recover"), stored, true)
		}},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			b.screenshotOnFailure(t, s.name)
			s.run(t)
			b.screenshot(t, s.name) // kept with -artifacts
		})
		if !ok {
			break
		}
	}
}

// TestChromiumDemoAbsentFromReleaseBuilds: the demo's session endpoint
// mints tokens without credentials, so release builds (CGO_ENABLED=0, no
// simulator, no dev mode) must not even contain it.
func TestChromiumDemoAbsentFromReleaseBuilds(t *testing.T) {
	for _, cgo := range []string{"0", "1"} {
		cmd := exec.Command("go", "list", "-deps", "./cmd/keywarden")
		cmd.Dir = proc.ModuleRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("CGO_ENABLED=%s go list: %v", cgo, err)
		}
		has := slices.Contains(strings.Fields(string(out)), "github.com/keywarden/keywarden/server/demo")
		if want := cgo == "1"; has != want {
			t.Errorf("CGO_ENABLED=%s: the binary contains server/demo: %v, want %v", cgo, has, want)
		}
	}
}

// chromiumDecodeKey decodes a key the page shows (standard base64).
func chromiumDecodeKey(t *testing.T, what, s string) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) == 0 {
		t.Fatalf("%s %q is not base64: %v", what, s, err)
	}
	return k
}

// chromiumExpectKey checks that the page recovered exactly the stored key,
// released sealed to the page's HPKE key (sealed) or in the clear.
func chromiumExpectKey(t *testing.T, out chromiumOutcome, stored []byte, sealed bool) {
	t.Helper()
	if out.State != "recovered" || out.ErrorCode != "" {
		t.Fatalf("recovery: state %q, status %q, error %q %q", out.State, out.Status, out.ErrorCode, out.Error)
	}
	if got := chromiumDecodeKey(t, "recovered key", out.Recovered); !bytes.Equal(got, stored) {
		t.Fatalf("recovered key %q differs from the stored key %q", out.Recovered, out.Stored)
	}
	if out.Match != "yes" {
		t.Fatalf("the page says match %q for equal keys", out.Match)
	}
	// What the page shows is what Keywarden released.
	status, body := out.finishResponse(t)
	var res struct {
		Key, SealedKey, Enc, Suite string
	}
	if err := json.Unmarshal(body, &res); status != 200 || err != nil {
		t.Fatalf("authentication/finish answered %d (%v)", status, err)
	}
	if sealed {
		// Only the page's private key opens it: the key is nowhere in
		// the answer, which is sealed with the hybrid suite.
		if res.Key != "" || res.SealedKey == "" || res.Enc == "" || res.Suite != "MLKEM768-X25519-HKDF-SHA256-AES-256-GCM" ||
			bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(stored))) {
			t.Fatalf("the release is not sealed to the page: %s", body)
		}
		return
	}
	if got := chromiumDecodeKey(t, "released key", res.Key); !bytes.Equal(got, stored) {
		t.Fatal("Keywarden released another key than the one stored")
	}
}

// chromiumExpectRefused checks that the page shows an error (with code, when
// not empty) and no key.
func chromiumExpectRefused(t *testing.T, out chromiumOutcome, stored []byte, code string) {
	t.Helper()
	if out.State != "error" || out.Error == "" {
		t.Fatalf("recovery was not refused: state %q, status %q, recovered %q", out.State, out.Status, out.Recovered)
	}
	if code != "" && out.ErrorCode != code {
		t.Fatalf("error code %q (%s), want %q", out.ErrorCode, out.Error, code)
	}
	if out.Recovered != "" || out.Match != "" {
		t.Fatalf("a key shows after a refusal: recovered %q, match %q", out.Recovered, out.Match)
	}
	if strings.Contains(out.Error, base64.StdEncoding.EncodeToString(stored)) {
		t.Fatal("the error message holds the key")
	}
	if code == "" || strings.HasPrefix(code, "browser_") {
		return // refused before anything reached Keywarden's finish
	}
	// Keywarden itself refused, with that code and no key.
	status, body := out.finishResponse(t)
	var res struct {
		Key, SealedKey string
		Error          struct{ Code string }
	}
	if err := json.Unmarshal(body, &res); err != nil || status < 400 || res.Error.Code != code {
		t.Fatalf("authentication/finish answered %d %s, want an error %q", status, body, code)
	}
	if res.Key != "" || res.SealedKey != "" || bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(stored))) {
		t.Fatal("the refusal carries a key")
	}
}
