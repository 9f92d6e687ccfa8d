package e2e

// Helpers of the Chromium demo test: the keywarden binary in dev mode and a
// headless Chromium driven over the DevTools protocol (chromedp), with
// WebAuthn virtual authenticators.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// chromiumPath is where Debian's chromium package (scripts/setup.sh)
// installs the browser.
const chromiumPath = "/usr/bin/chromium"

// chromiumAdminKey is dev mode's plain-text admin key for these tests.
const chromiumAdminKey = "chromium-e2e-admin-key-0123456789"

// chromiumExecutable returns the browser, or skips the test when it is not
// installed (fails instead under CI=true, where setup.sh must have run).
func chromiumExecutable(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (run scripts/setup.sh): %v", chromiumPath, err)
		}
		t.Skipf("%s is missing; run `bash scripts/setup.sh` to install Debian's chromium", chromiumPath)
	}
	return chromiumPath
}

// chromiumKeywarden is a running `keywarden dev` whose relying party is
// localhost and whose one origin is Origin.
type chromiumKeywarden struct {
	Origin string // http://localhost:<port>
	addr   string // 127.0.0.1:<port>
}

// chromiumStartKeywarden runs `keywarden dev` on a free loopback port with
// a fresh data folder and waits until it serves the demo page.
func chromiumStartKeywarden(t *testing.T, bin string) *chromiumKeywarden {
	t.Helper()
	addr := proc.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	kw := &chromiumKeywarden{Origin: "http://localhost:" + port, addr: addr}
	n := proc.StartNode(t, bin, proc.NodeOptions{Addr: addr, Env: []string{
		"KEYWARDEN_ADMIN_KEY=" + chromiumAdminKey,
		"KEYWARDEN_PASSKEY_RP_ID=localhost",
		"KEYWARDEN_PASSKEY_ORIGINS=" + kw.Origin,
		"KEYWARDEN_LISTEN_CORS_ORIGINS=" + kw.Origin,
	}})
	n.WaitReady(t, "/demo/")
	return kw
}

// chromiumBrowser is one headless Chromium tab.
type chromiumBrowser struct {
	ctx context.Context // the tab's chromedp context
}

// chromiumLaunch starts headless Chromium with a fresh profile; the browser
// is closed when the test ends.
func chromiumLaunch(t *testing.T, execPath string) *chromiumBrowser {
	t.Helper()
	out := &proc.SyncBuffer{}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(execPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // the tests may run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1000, 1100),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(out),
	)
	ctx, cancelTab := chromedp.NewContext(actx)
	// One deadline for everything the browser does in this test.
	ctx, cancelTimeout := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("--- chromium output:\n%s", out.String())
		}
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens the tab
		t.Fatalf("start chromium: %v\n%s", err, out.String())
	}
	return &chromiumBrowser{ctx: ctx}
}

// do runs actions, failing the test on an error.
func (b *chromiumBrowser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text is the text content of the element with the id.
func (b *chromiumBrowser) text(t *testing.T, id string) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.TextContent(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("read #%s: %v", id, err)
	}
	return strings.TrimSpace(s)
}

// attr is an attribute of the element with the id ("" when absent).
func (b *chromiumBrowser) attr(t *testing.T, id, name string) string {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		fmt.Sprintf(`document.getElementById(%q).getAttribute(%q) || ""`, id, name)))
	if err != nil {
		t.Fatalf("read #%s[%s]: %v", id, name, err)
	}
	return v
}

// chromiumOutcome is what the page shows once a flow has finished, and
// what Keywarden answered to its authentication/finish request.
type chromiumOutcome struct {
	State     string // #status data-state: registered, recovered, error
	Status    string // #status text
	ErrorCode string // #error data-code: a Keywarden code or browser_<DOMException name>
	Error     string // #error text
	Stored    string // #stored-key
	Recovered string // #recovered-key
	Match     string // #match data-match: yes, no, unknown or ""

	b      *chromiumBrowser
	finish <-chan network.EventResponseReceived
}

// chromiumFinishPath is the route whose answer carries the released key.
const chromiumFinishPath = "/v1/passkeys/authentication/finish"

// clickAndWait clicks the button with the id and waits until the page
// reports that the flow it started has finished (#status data-done grows).
// It records the responses to authentication/finish the flow received.
func (b *chromiumBrowser) clickAndWait(t *testing.T, id string) chromiumOutcome {
	t.Helper()
	before := b.attr(t, "status", "data-done")
	if before == "" {
		before = "0"
	}
	ectx, cancel := context.WithCancel(b.ctx)
	t.Cleanup(cancel)
	finish := make(chan network.EventResponseReceived, 4)
	events := chromedp.Events(ectx, network.ResponseReceived) // subscribed from here on
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			if u, err := url.Parse(ev.Response.URL); err == nil && u.Path == chromiumFinishPath {
				select {
				case finish <- ev:
				default:
				}
			}
		}
	}()

	b.do(t, "click #"+id, chromedp.Click(chromedp.ID(id)))
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](
		fmt.Sprintf(`Number(document.getElementById("status").dataset.done || "0") > %s`, before),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second)))
	if err != nil {
		t.Fatalf("waiting for the page after clicking #%s: %v (status: %q)", id, err, b.text(t, "status"))
	}
	out := chromiumOutcome{
		State: b.attr(t, "status", "data-state"), Status: b.text(t, "status"),
		ErrorCode: b.attr(t, "error", "data-code"), Error: b.text(t, "error"),
		Stored: b.text(t, "stored-key"), Recovered: b.text(t, "recovered-key"),
		Match: b.attr(t, "match", "data-match"), b: b, finish: finish,
	}
	t.Logf("page after #%s: %s %s", id, out.Status, out.Error)
	return out
}

// finishResponse returns the HTTP status and body of Keywarden's answer to
// the flow's authentication/finish request, read from the browser's network
// log (not from the page), so the test sees what the server released.
func (o chromiumOutcome) finishResponse(t *testing.T) (int64, []byte) {
	t.Helper()
	var ev network.EventResponseReceived
	select {
	case ev = <-o.finish:
	case <-time.After(30 * time.Second):
		t.Fatalf("the page sent no %s request (or its response never arrived)", chromiumFinishPath)
	}
	res, err := chromedp.Call(o.b.ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: ev.RequestID})
	if err != nil {
		t.Fatalf("Network.getResponseBody of %s: %v", chromiumFinishPath, err)
	}
	return ev.Response.Status, res.Body
}

// screenshot saves the page as name.png in the test's artifact directory
// (kept with `go test -artifacts`) and returns the path.
func (b *chromiumBrowser) screenshot(t *testing.T, name string) string {
	t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	return path
}

// screenshotOnFailure registers a cleanup that saves the page when the test
// has failed.
func (b *chromiumBrowser) screenshotOnFailure(t *testing.T, name string) {
	t.Cleanup(func() {
		if t.Failed() {
			if p := b.screenshot(t, name+"-failed"); p != "" {
				t.Logf("screenshot of the page: %s", p)
			}
		}
	})
}

// enableWebAuthn enables the WebAuthn domain (no browser UI) on the tab.
func (b *chromiumBrowser) enableWebAuthn(t *testing.T) {
	t.Helper()
	if _, err := chromedp.Call(b.ctx, webauthn.Enable, webauthn.EnableParams{EnableUI: new(false)}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
}

// addAuthenticator adds a platform authenticator with resident keys and
// user verification that succeeds without a prompt.
func (b *chromiumBrowser) addAuthenticator(t *testing.T) webauthn.AuthenticatorID {
	t.Helper()
	res, err := chromedp.Call(b.ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
		Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol:                    webauthn.AuthenticatorProtocolCtap2,
			Ctap2version:                webauthn.Ctap2versionCtap21,
			Transport:                   webauthn.AuthenticatorTransportInternal,
			HasResidentKey:              true,
			HasUserVerification:         true,
			IsUserVerified:              true,
			AutomaticPresenceSimulation: true,
		},
	})
	if err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}
	return res.AuthenticatorID
}

func (b *chromiumBrowser) removeAuthenticator(t *testing.T, id webauthn.AuthenticatorID) {
	t.Helper()
	if _, err := chromedp.Call(b.ctx, webauthn.RemoveVirtualAuthenticator, webauthn.RemoveVirtualAuthenticatorParams{AuthenticatorID: id}); err != nil {
		t.Fatalf("WebAuthn.removeVirtualAuthenticator: %v", err)
	}
}

func (b *chromiumBrowser) credentials(t *testing.T, id webauthn.AuthenticatorID) []*webauthn.Credential {
	t.Helper()
	res, err := chromedp.Call(b.ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: id})
	if err != nil {
		t.Fatalf("WebAuthn.getCredentials: %v", err)
	}
	return res.Credentials
}

func (b *chromiumBrowser) clearCredentials(t *testing.T, id webauthn.AuthenticatorID) {
	t.Helper()
	if _, err := chromedp.Call(b.ctx, webauthn.ClearCredentials, webauthn.ClearCredentialsParams{AuthenticatorID: id}); err != nil {
		t.Fatalf("WebAuthn.clearCredentials: %v", err)
	}
}

// chromiumCredential is the part of WebAuthn.Credential these tests set.
// (cdproto's Credential always sends generateCmtgKeyOnNextOperation, which
// this Chromium refuses for an authenticator without CMTG support.)
type chromiumCredential struct {
	CredentialID         []byte  `json:"credentialId"`
	IsResidentCredential bool    `json:"isResidentCredential"`
	RpID                 string  `json:"rpId"`
	PrivateKey           []byte  `json:"privateKey"` // PKCS#8
	UserHandle           []byte  `json:"userHandle,omitempty"`
	SignCount            float64 `json:"signCount"`
}

type chromiumAddCredentialParams struct {
	AuthenticatorID webauthn.AuthenticatorID `json:"authenticatorId"`
	Credential      chromiumCredential       `json:"credential"`
}

var chromiumAddCredential = cdp.Command[chromiumAddCredentialParams, cdp.Empty]{Method: webauthn.CommandAddCredential}

func (b *chromiumBrowser) addCredential(t *testing.T, id webauthn.AuthenticatorID, c chromiumCredential) {
	t.Helper()
	if _, err := chromedp.Call(b.ctx, chromiumAddCredential, chromiumAddCredentialParams{AuthenticatorID: id, Credential: c}); err != nil {
		t.Fatalf("WebAuthn.addCredential: %v", err)
	}
}

// chromiumP256Key is a fresh ECDSA P-256 private key in PKCS#8, the form
// WebAuthn.addCredential takes.
func chromiumP256Key(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// chromiumRandom returns n random bytes.
func chromiumRandom(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}
