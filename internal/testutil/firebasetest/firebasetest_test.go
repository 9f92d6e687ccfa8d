package firebasetest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fetchCerts reads the issuer's endpoint the way a verifier would.
func fetchCerts(t *testing.T, url string) (int, http.Header, map[string]*rsa.PublicKey) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, resp.Header, nil
	}
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not Google's format: %v", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for kid, p := range m {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil || blk.Type != "CERTIFICATE" {
			t.Fatalf("kid %s: not a PEM certificate", kid)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		keys[kid] = c.PublicKey.(*rsa.PublicKey)
	}
	return resp.StatusCode, resp.Header, keys
}

func verify(tok string, keys map[string]*rsa.PublicKey) (jwt.MapClaims, error) {
	c := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation()).
		ParseWithClaims(tok, c, func(tk *jwt.Token) (any, error) {
			k, ok := keys[tk.Header["kid"].(string)]
			if !ok {
				return nil, jwt.ErrTokenUnverifiable
			}
			return k, nil
		})
	return c, err
}

func TestIssuerServesGoogleFormatAndMintsVerifiableTokens(t *testing.T) {
	iss := NewIssuer(t, "proj-a")
	status, hdr, keys := fetchCerts(t, iss.URL())
	if status != http.StatusOK || len(keys) != 2 {
		t.Fatalf("status %d, %d keys; want 200 and 2", status, len(keys))
	}
	if cc := hdr.Get("Cache-Control"); !strings.Contains(cc, "max-age=3600") {
		t.Errorf("Cache-Control = %q", cc)
	}
	if iss.Fetches() != 1 {
		t.Errorf("fetches = %d, want 1", iss.Fetches())
	}
	c, err := verify(iss.Mint(Claims{"sub": "alice", "email": Delete}), keys)
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	now := iss.Clock().Now().Unix()
	if c["sub"] != "alice" || c["aud"] != "proj-a" || c["iss"] != "https://securetoken.google.com/proj-a" {
		t.Errorf("claims = %v", c)
	}
	if _, ok := c["email"]; ok {
		t.Error("Delete did not remove email")
	}
	if int64(c["iat"].(float64)) != now || int64(c["exp"].(float64)) != now+3600 {
		t.Errorf("iat/exp = %v/%v, now %d", c["iat"], c["exp"], now)
	}

	// A token signed by an unpublished key does not verify against the set.
	stranger := GenerateKey(t, iss.Clock().Now(), iss.Clock().Now().Add(time.Hour))
	if _, err := verify(iss.MintWith(stranger, nil), keys); err == nil {
		t.Error("token from an unpublished key verified")
	}
}

func TestIssuerRotateDownMaxAgeAndRawResponse(t *testing.T) {
	iss := NewIssuer(t, "proj-a")
	old := iss.Key()
	iss.Rotate()
	second := iss.Rotate()
	_, _, keys := fetchCerts(t, iss.URL())
	if _, ok := keys[old.Kid]; ok {
		t.Error("key rotated away twice is still served")
	}
	if _, ok := keys[second.Kid]; !ok || len(keys) != 2 {
		t.Errorf("served %d keys, current present %v", len(keys), ok)
	}
	if _, err := verify(iss.Mint(nil), keys); err != nil {
		t.Errorf("token after rotation: %v", err)
	}

	iss.SetMaxAge(90 * time.Second)
	if _, hdr, _ := fetchCerts(t, iss.URL()); !strings.Contains(hdr.Get("Cache-Control"), "max-age=90") {
		t.Errorf("Cache-Control = %q", hdr.Get("Cache-Control"))
	}
	iss.SetDown(true)
	if status, _, _ := fetchCerts(t, iss.URL()); status != http.StatusServiceUnavailable {
		t.Errorf("down: status %d", status)
	}
	iss.SetDown(false)
	iss.SetResponse(http.StatusOK, []byte(`{"k":"not pem"}`))
	resp, err := http.Get(iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"k":"not pem"}` {
		t.Errorf("raw response = %q", body)
	}
	if iss.Fetches() != 4 {
		t.Errorf("fetches = %d, want 4", iss.Fetches())
	}
}

func TestSignHostile(t *testing.T) {
	iss := NewIssuer(t, "proj-a")
	tok := iss.Sign(Token{Alg: "none"})
	if !strings.HasSuffix(tok, ".") {
		t.Errorf("alg none token should have an empty signature: %q", tok)
	}
	tok = iss.Sign(Token{RawHeader: []byte(`{"alg":"RS256","alg":"none"}`), Signature: []byte("x")})
	if !strings.HasPrefix(tok, "eyJhbGciOiJSUzI1NiIsImFsZyI6Im5vbmUifQ.") || !strings.HasSuffix(tok, ".eA") {
		t.Errorf("raw header token = %q", tok)
	}
	hs := iss.Sign(Token{Alg: "HS256", Key: []byte("secret")})
	if _, err := jwt.Parse(hs, func(*jwt.Token) (any, error) { return []byte("secret"), nil }); err != nil {
		t.Errorf("HS256 token does not verify with its secret: %v", err)
	}
}

func TestClock(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	c := NewClock(start)
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(start.Add(time.Minute)) {
		t.Errorf("Now = %v", got)
	}
	c.Set(start)
	if !c.Now().Equal(start) {
		t.Error("Set did not set")
	}
	iss := NewIssuer(t, "p", WithClock(c))
	if iss.Clock() != c {
		t.Error("WithClock ignored")
	}
}

func TestDeterministicKey(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := DeterministicKey(t, 7, start, start.Add(time.Hour))
	b := DeterministicKey(t, 7, start, start.Add(time.Hour))
	c := DeterministicKey(t, 8, start, start.Add(time.Hour))
	if a.Kid != b.Kid || a.Private.N.Cmp(b.Private.N) != 0 || a.Private.N.BitLen() != 2048 {
		t.Fatalf("same seed, different keys (%s, %s) or wrong size %d", a.Kid, b.Kid, a.Private.N.BitLen())
	}
	if a.Kid == c.Kid || a.Private.N.Cmp(c.Private.N) == 0 {
		t.Fatal("different seeds, same key")
	}
	iss := NewIssuer(t, "p", WithKey(a), WithClock(NewClock(start)))
	if got := iss.Published(); len(got) != 1 || got[0] != a.Kid {
		t.Fatalf("published %v", got)
	}
	tok := iss.Mint(nil)
	if tok != NewIssuer(t, "p", WithKey(b), WithClock(NewClock(start))).Mint(nil) {
		t.Error("same key, same clock, different tokens")
	}
	_, _, keys := fetchCerts(t, iss.URL())
	if _, err := verify(tok, keys); err != nil {
		t.Errorf("token does not verify: %v", err)
	}
}
