package firebase

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

const projectA = "keywarden-test-a"

// newVerifier makes a verifier for iss's project and endpoint on iss's
// clock; mut may change the options.
func newVerifier(t testing.TB, iss *firebasetest.Issuer, mut func(*Options)) *Verifier {
	t.Helper()
	o := Options{ProjectIDs: []string{iss.ProjectID()}, CertsURL: iss.URL(), Clock: iss.Clock().Now}
	if mut != nil {
		mut(&o)
	}
	v, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// wantRefusal asserts that Verify refused with status and code, returned no
// identity and did not echo the token.
func wantRefusal(t *testing.T, id *Identity, err error, tok string, status int, code string) {
	t.Helper()
	if id != nil {
		t.Fatalf("identity returned with a refusal: %+v", id)
	}
	if err == nil {
		t.Fatalf("token accepted, want %s", code)
	}
	e, ok := apierr.As(err)
	if !ok {
		t.Fatalf("error %v is not an *apierr.Error", err)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("got %d %s (%s), want %d %s", e.Status, e.Code, e.Message, status, code)
	}
	if e.Message == "" {
		t.Error("empty message")
	}
	if len(tok) > 16 && strings.Contains(e.Message, tok) {
		t.Errorf("message echoes the token: %s", e.Message)
	}
	if segs := strings.Split(tok, "."); len(segs) == 3 {
		for _, s := range segs {
			if len(s) > 16 && strings.Contains(e.Message, s) {
				t.Errorf("message echoes a token segment: %s", e.Message)
			}
		}
	}
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// fixture is what hostile tokens are made from.
type fixture struct {
	iss      *firebasetest.Issuer
	attacker firebasetest.Key
	ec       *ecdsa.PrivateKey
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	iss := firebasetest.NewIssuer(t, projectA)
	now := iss.Clock().Now()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{iss: iss, attacker: firebasetest.GenerateKey(t, now.Add(-time.Hour), now.Add(24*time.Hour)), ec: ec}
}

// claimsJSON is the default claims as JSON, with extra inserted first
// (extra must end with a comma).
func (f *fixture) claimsJSON(t *testing.T, extra string) []byte {
	b, err := json.Marshal(f.iss.Claims())
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("{"+extra), b[1:]...)
}

// resign replaces a valid token's claims segment by claims without
// re-signing.
func resign(tok string, claims []byte) string {
	p := strings.Split(tok, ".")
	return p[0] + "." + enc(claims) + "." + p[2]
}

func TestVerifyRefusesHostileTokens(t *testing.T) {
	f := newFixture(t)
	iss := f.iss
	now := iss.Clock().Now().Unix()
	kid := iss.Key().Kid
	hour := int64(3600)
	mint := func(c firebasetest.Claims) func(*testing.T) string {
		return func(*testing.T) string { return iss.Mint(c) }
	}
	sign := func(tok firebasetest.Token) func(*testing.T) string {
		return func(*testing.T) string { return iss.Sign(tok) }
	}
	rawClaims := func(extra string) func(*testing.T) string {
		return func(t *testing.T) string { return iss.Sign(firebasetest.Token{RawClaims: f.claimsJSON(t, extra)}) }
	}
	header := func(h map[string]any) func(*testing.T) string { return sign(firebasetest.Token{Header: h}) }
	withTenants := func(ts ...string) func(*Options) { return func(o *Options) { o.Tenants = ts } }

	cases := []struct {
		name  string
		opts  func(*Options)
		token func(*testing.T) string
		code  string
	}{
		// Structure.
		{name: "empty", token: func(*testing.T) string { return "" }, code: "token_missing"},
		{name: "larger than 8 KiB", token: func(*testing.T) string { return strings.Repeat("a", MaxTokenSize+1) }, code: "token_too_large"},
		{name: "valid but padded past 8 KiB", token: mint(firebasetest.Claims{"pad": strings.Repeat("x", 7000)}), code: "token_too_large"},
		{name: "huge header", token: header(map[string]any{"alg": "RS256", "kid": kid, "x": strings.Repeat("a", 2000)}), code: "token_too_large"},
		{name: "two segments", token: func(*testing.T) string { s := iss.Mint(nil); return s[:strings.LastIndex(s, ".")] }, code: "token_malformed"},
		{name: "four segments", token: func(*testing.T) string { return iss.Mint(nil) + ".AAAA" }, code: "token_malformed"},
		{name: "five segments (JWE)", token: func(*testing.T) string { return "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d" }, code: "token_malformed"},
		{name: "Bearer prefix left on", token: func(*testing.T) string { return "Bearer " + iss.Mint(nil) }, code: "token_malformed"},
		{name: "line break inside", token: func(*testing.T) string { s := iss.Mint(nil); return s[:10] + "\n" + s[10:] }, code: "token_malformed"},
		{name: "base64 padding", token: func(*testing.T) string {
			p := strings.Split(iss.Mint(nil), ".")
			return p[0] + "==." + p[1] + "." + p[2]
		}, code: "token_malformed"},
		{name: "standard base64 alphabet", token: func(*testing.T) string { return "ab+/." + strings.Split(iss.Mint(nil), ".")[1] + ".AA" }, code: "token_malformed"},
		{name: "header truncated", token: func(*testing.T) string { s := iss.Mint(nil); return s[3:] }, code: "token_malformed"},
		{name: "header not JSON", token: sign(firebasetest.Token{RawHeader: []byte(`alg=RS256`)}), code: "token_malformed"},
		{name: "header a JSON array", token: sign(firebasetest.Token{RawHeader: []byte(`["RS256"]`)}), code: "token_malformed"},
		{name: "header trailing data", token: sign(firebasetest.Token{RawHeader: []byte(`{"alg":"RS256","kid":"` + kid + `"}{}`)}), code: "token_malformed"},
		{name: "header invalid UTF-8", token: sign(firebasetest.Token{RawHeader: []byte("{\"alg\":\"RS256\",\"kid\":\"" + kid + "\",\"x\":\"\xff\"}")}), code: "token_malformed"},
		{name: "header duplicate alg", token: sign(firebasetest.Token{RawHeader: []byte(`{"alg":"RS256","alg":"none","kid":"` + kid + `"}`)}), code: "token_malformed"},
		{name: "header duplicate kid", token: sign(firebasetest.Token{RawHeader: []byte(`{"alg":"RS256","kid":"other","kid":"` + kid + `"}`)}), code: "token_malformed"},
		{name: "claims not base64", token: func(*testing.T) string { p := strings.Split(iss.Mint(nil), "."); return p[0] + ".e." + p[2] }, code: "token_malformed"},
		{name: "claims not JSON", token: sign(firebasetest.Token{RawClaims: []byte(`sub=me`)}), code: "token_malformed"},
		{name: "claims null", token: sign(firebasetest.Token{RawClaims: []byte(`null`)}), code: "token_malformed"},
		{name: "claims duplicate aud", token: rawClaims(`"aud":"someone-else",`), code: "token_malformed"},
		{name: "claims duplicate sub", token: rawClaims(`"sub":"victim",`), code: "token_malformed"},
		{name: "claims duplicate aud, escaped", token: rawClaims(`"\u0061ud":"someone-else",`), code: "token_malformed"},
		{name: "claims nested duplicate tenant", token: rawClaims(`"x":{"tenant":"a","tenant":"b"},`), code: "token_malformed"},
		{name: "claims nested too deep", token: rawClaims(`"x":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `,`), code: "token_malformed"},
		{name: "signature of impossible length", token: func(*testing.T) string { return iss.Mint(nil) + "AAA" }, code: "token_malformed"},

		// Header.
		{name: "alg none", token: sign(firebasetest.Token{Alg: "none"}), code: "token_alg"},
		{name: "alg NONE with signature", token: sign(firebasetest.Token{Alg: "NONE", SignAlg: "RS256"}), code: "token_alg"},
		{name: "alg missing", token: header(map[string]any{"kid": kid}), code: "token_alg"},
		{name: "alg a number", token: header(map[string]any{"alg": 256, "kid": kid}), code: "token_alg"},
		{name: "alg lower case", token: sign(firebasetest.Token{Alg: "rs256", SignAlg: "RS256"}), code: "token_alg"},
		{name: "HS256 keyed with the certificate PEM", token: func(*testing.T) string {
			return iss.Sign(firebasetest.Token{Alg: "HS256", Key: []byte(iss.Key().CertPEM)})
		}, code: "token_alg"},
		{name: "HS256 keyed with the public key DER", token: func(t *testing.T) string {
			der, err := x509.MarshalPKIXPublicKey(&iss.Key().Private.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			return iss.Sign(firebasetest.Token{Alg: "HS256", Key: der})
		}, code: "token_alg"},
		{name: "ES256", token: func(*testing.T) string { return iss.Sign(firebasetest.Token{Alg: "ES256", Key: f.ec}) }, code: "token_alg"},
		{name: "PS256 with the real key", token: sign(firebasetest.Token{Alg: "PS256"}), code: "token_alg"},
		{name: "RS512 with the real key", token: sign(firebasetest.Token{Alg: "RS512"}), code: "token_alg"},
		{name: "crit extension", token: header(map[string]any{"alg": "RS256", "kid": kid, "crit": []string{"exp"}, "exp": 1}), code: "token_malformed"},
		{name: "kid missing (custom token)", token: header(map[string]any{"alg": "RS256", "typ": "JWT"}), code: "token_kid_unknown"},
		{name: "kid empty", token: sign(firebasetest.Token{Kid: "", Header: map[string]any{"alg": "RS256", "kid": ""}}), code: "token_kid_unknown"},
		{name: "kid a number", token: header(map[string]any{"alg": "RS256", "kid": 7}), code: "token_malformed"},
		{name: "kid too long", token: header(map[string]any{"alg": "RS256", "kid": strings.Repeat("a", 200)}), code: "token_kid_unknown"},
		{name: "kid unknown", token: sign(firebasetest.Token{Kid: "0123456789abcdef"}), code: "token_kid_unknown"},
		{name: "kid path traversal", token: sign(firebasetest.Token{Kid: "../../etc/passwd"}), code: "token_kid_unknown"},
		{name: "unpublished key, own kid", token: func(*testing.T) string { return iss.MintWith(f.attacker, nil) }, code: "token_kid_unknown"},

		// Signature.
		{name: "signature empty", token: func(*testing.T) string { s := iss.Mint(nil); return s[:strings.LastIndex(s, ".")+1] }, code: "token_signature"},
		{name: "signature garbage", token: sign(firebasetest.Token{Signature: make([]byte, 256)}), code: "token_signature"},
		{name: "signature one byte short", token: func(*testing.T) string {
			p := strings.Split(iss.Mint(nil), ".")
			sig, _ := base64.RawURLEncoding.DecodeString(p[2])
			return p[0] + "." + p[1] + "." + enc(sig[:len(sig)-1])
		}, code: "token_signature"},
		{name: "signature bit flipped", token: func(*testing.T) string {
			p := strings.Split(iss.Mint(nil), ".")
			sig, _ := base64.RawURLEncoding.DecodeString(p[2])
			sig[100] ^= 1
			return p[0] + "." + p[1] + "." + enc(sig)
		}, code: "token_signature"},
		{name: "claims changed after signing", token: func(t *testing.T) string {
			c := iss.Claims()
			c["sub"] = "victim"
			b, _ := json.Marshal(c)
			return resign(iss.Mint(nil), b)
		}, code: "token_signature"},
		{name: "attacker key under the real kid", token: sign(firebasetest.Token{Key: f.attacker.Private}), code: "token_signature"},
		{name: "attacker key embedded as jwk", token: func(*testing.T) string {
			pub := f.attacker.Private.PublicKey
			jwk := map[string]any{"kty": "RSA", "n": enc(pub.N.Bytes()), "e": enc(big.NewInt(int64(pub.E)).Bytes())}
			return iss.Sign(firebasetest.Token{Header: map[string]any{"alg": "RS256", "kid": kid, "jwk": jwk}, Key: f.attacker.Private})
		}, code: "token_signature"},
		{name: "signature from another token", token: func(*testing.T) string {
			other := strings.Split(iss.Mint(firebasetest.Claims{"sub": "someone"}), ".")
			p := strings.Split(iss.Mint(nil), ".")
			return p[0] + "." + p[1] + "." + other[2]
		}, code: "token_signature"},

		// Audience and issuer.
		{name: "aud another project", token: mint(firebasetest.Claims{"aud": "other-project", "iss": "https://securetoken.google.com/other-project"}), code: "wrong_audience"},
		{name: "aud missing", token: mint(firebasetest.Claims{"aud": firebasetest.Delete}), code: "wrong_audience"},
		{name: "aud only as AUD", token: mint(firebasetest.Claims{"aud": firebasetest.Delete, "AUD": projectA}), code: "wrong_audience"},
		{name: "aud an array", token: mint(firebasetest.Claims{"aud": []string{projectA}}), code: "wrong_audience"},
		{name: "aud with trailing newline", token: mint(firebasetest.Claims{"aud": projectA + "\n"}), code: "wrong_audience"},
		{name: "Google OAuth ID token", token: mint(firebasetest.Claims{"aud": "1234.apps.googleusercontent.com", "iss": "https://accounts.google.com"}), code: "wrong_audience"},
		{name: "iss another project", token: mint(firebasetest.Claims{"iss": "https://securetoken.google.com/other-project"}), code: "wrong_issuer"},
		{name: "iss of the other configured project", opts: func(o *Options) { o.ProjectIDs = append(o.ProjectIDs, "keywarden-test-b") },
			token: mint(firebasetest.Claims{"iss": "https://securetoken.google.com/keywarden-test-b"}), code: "wrong_issuer"},
		{name: "iss missing", token: mint(firebasetest.Claims{"iss": firebasetest.Delete}), code: "wrong_issuer"},
		{name: "iss over http", token: mint(firebasetest.Claims{"iss": "http://securetoken.google.com/" + projectA}), code: "wrong_issuer"},
		{name: "iss trailing slash", token: mint(firebasetest.Claims{"iss": "https://securetoken.google.com/" + projectA + "/"}), code: "wrong_issuer"},
		{name: "iss Google accounts", token: mint(firebasetest.Claims{"iss": "accounts.google.com"}), code: "wrong_issuer"},

		// Subject.
		{name: "sub empty", token: mint(firebasetest.Claims{"sub": ""}), code: "subject_invalid"},
		{name: "sub missing", token: mint(firebasetest.Claims{"sub": firebasetest.Delete}), code: "subject_invalid"},
		{name: "sub 129 characters", token: mint(firebasetest.Claims{"sub": strings.Repeat("é", 129)}), code: "subject_invalid"},
		{name: "sub a number", token: mint(firebasetest.Claims{"sub": 42}), code: "subject_invalid"},
		{name: "sub with NUL", token: mint(firebasetest.Claims{"sub": "uid\x00other"}), code: "subject_invalid"},
		{name: "sub with newline", token: mint(firebasetest.Claims{"sub": "uid\nother"}), code: "subject_invalid"},
		{name: "sub with U+FFFD", token: mint(firebasetest.Claims{"sub": "uid\uFFFD"}), code: "subject_invalid"},
		{name: "sub a lone surrogate escape", token: func(t *testing.T) string {
			b, _ := json.Marshal(merge(iss.Claims(), firebasetest.Claims{"sub": "SUBX"}))
			return iss.Sign(firebasetest.Token{RawClaims: []byte(strings.Replace(string(b), `"SUBX"`, `"uid\ud800"`, 1))})
		}, code: "subject_invalid"},

		// Times (leeway is 1 minute).
		{name: "expired", token: mint(firebasetest.Claims{"iat": now - 2*hour, "auth_time": now - 2*hour, "exp": now - hour}), code: "token_expired"},
		{name: "expired just past leeway", token: mint(firebasetest.Claims{"iat": now - hour, "auth_time": now - hour, "exp": now - 60}), code: "token_expired"},
		{name: "exp missing", token: mint(firebasetest.Claims{"exp": firebasetest.Delete}), code: "token_malformed"},
		{name: "exp a string", token: mint(firebasetest.Claims{"exp": "9999999999"}), code: "token_malformed"},
		{name: "exp a fraction", token: mint(firebasetest.Claims{"exp": float64(now) + 3600.5}), code: "token_malformed"},
		{name: "exp negative", token: mint(firebasetest.Claims{"exp": -1}), code: "token_malformed"},
		{name: "exp beyond year 9999", token: mint(firebasetest.Claims{"exp": int64(1) << 40}), code: "token_malformed"},
		{name: "iat in the future", token: mint(firebasetest.Claims{"iat": now + 120, "auth_time": now}), code: "token_issued_in_future"},
		{name: "iat missing", token: mint(firebasetest.Claims{"iat": firebasetest.Delete}), code: "token_malformed"},
		{name: "nbf in the future", token: mint(firebasetest.Claims{"nbf": now + 600}), code: "token_not_yet_valid"},
		{name: "nbf a string", token: mint(firebasetest.Claims{"nbf": "0"}), code: "token_malformed"},
		{name: "auth_time in the future", token: mint(firebasetest.Claims{"auth_time": now + 600}), code: "auth_time_invalid"},
		{name: "auth_time missing", token: mint(firebasetest.Claims{"auth_time": firebasetest.Delete}), code: "auth_time_invalid"},
		{name: "auth_time after iat", token: mint(firebasetest.Claims{"iat": now - 600, "auth_time": now - 60}), code: "auth_time_invalid"},
		{name: "auth_time null", token: mint(firebasetest.Claims{"auth_time": nil}), code: "token_malformed"},

		// Tenant and policies.
		{name: "tenant not configured", token: mint(firebasetest.Claims{"firebase": firebasetest.Firebase("password", "tenant-x")}), code: "wrong_tenant"},
		{name: "tenant not in the list", opts: withTenants("", "tenant-a"),
			token: mint(firebasetest.Claims{"firebase": firebasetest.Firebase("password", "tenant-b")}), code: "wrong_tenant"},
		{name: "no tenant, tenants only", opts: withTenants("tenant-a"), token: mint(nil), code: "wrong_tenant"},
		{name: "tenant empty string", opts: withTenants("", "tenant-a"),
			token: mint(firebasetest.Claims{"firebase": map[string]any{"sign_in_provider": "password", "tenant": ""}}), code: "wrong_tenant"},
		{name: "tenant case differs", opts: withTenants("tenant-a"),
			token: mint(firebasetest.Claims{"firebase": firebasetest.Firebase("password", "Tenant-A")}), code: "wrong_tenant"},
		{name: "tenant a number", token: mint(firebasetest.Claims{"firebase": map[string]any{"tenant": 1}}), code: "token_malformed"},
		{name: "firebase claim a string", token: mint(firebasetest.Claims{"firebase": "password"}), code: "token_malformed"},
		{name: "provider not allowed", opts: func(o *Options) { o.AllowedProviders = []string{"google.com"} }, token: mint(nil), code: "provider_not_allowed"},
		{name: "anonymous not allowed", opts: func(o *Options) { o.AllowedProviders = []string{"password", "google.com"} },
			token: mint(firebasetest.Claims{"firebase": firebasetest.Firebase("anonymous", "")}), code: "provider_not_allowed"},
		{name: "provider missing", opts: func(o *Options) { o.AllowedProviders = []string{"password"} },
			token: mint(firebasetest.Claims{"firebase": firebasetest.Delete}), code: "provider_not_allowed"},
		{name: "email not verified", opts: func(o *Options) { o.RequireEmailVerified = true },
			token: mint(firebasetest.Claims{"email_verified": false}), code: "email_not_verified"},
		{name: "email_verified missing", opts: func(o *Options) { o.RequireEmailVerified = true },
			token: mint(firebasetest.Claims{"email_verified": firebasetest.Delete}), code: "email_not_verified"},
		{name: "email_verified a string", token: mint(firebasetest.Claims{"email_verified": "true"}), code: "token_malformed"},
		{name: "sign-in too old", opts: func(o *Options) { o.MaxAuthAge = 5 * time.Minute },
			token: mint(firebasetest.Claims{"auth_time": now - hour}), code: "auth_too_old"},
		{name: "issued too long ago", opts: func(o *Options) { o.MaxIssuedAge = 10 * time.Minute },
			token: mint(firebasetest.Claims{"iat": now - 1800, "auth_time": now - 1800}), code: "token_too_old"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d hostile tokens", len(cases))
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, iss, tc.opts)
			tok := tc.token(t)
			id, err := v.Verify(context.Background(), tok)
			wantRefusal(t, id, err, tok, http.StatusUnauthorized, tc.code)
		})
	}
	t.Logf("%d hostile tokens refused", len(cases))
}

func TestVerifyMessages(t *testing.T) {
	f := newFixture(t)
	v := newVerifier(t, f.iss, nil)
	cases := []struct {
		claims firebasetest.Claims
		header map[string]any
		want   []string
	}{
		{claims: firebasetest.Claims{"aud": "1234.apps.googleusercontent.com", "iss": "https://accounts.google.com"},
			want: []string{`"1234.apps.googleusercontent.com"`, `"https://accounts.google.com"`, "Google OAuth ID token"}},
		{claims: firebasetest.Claims{"aud": "other", "iss": "https://securetoken.google.com/other"},
			want: []string{`"other"`, "another Firebase project"}},
		{claims: firebasetest.Claims{"iss": "https://accounts.google.com"},
			want: []string{`"https://accounts.google.com"`, "Google OAuth ID token"}},
		{claims: firebasetest.Claims{"aud": "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit"},
			want: []string{"custom token"}},
		{header: map[string]any{"alg": "RS256"}, want: []string{"custom token"}},
		{header: map[string]any{"alg": "HS256", "kid": "k"}, want: []string{`"HS256"`, "RS256"}},
	}
	for _, tc := range cases {
		tok := f.iss.Sign(firebasetest.Token{Header: tc.header, Claims: merge(f.iss.Claims(), tc.claims)})
		_, err := v.Verify(context.Background(), tok)
		e, ok := apierr.As(err)
		if !ok {
			t.Fatalf("%v: not refused with an apierr: %v", tc.want, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Message, w) {
				t.Errorf("message %q lacks %q", e.Message, w)
			}
		}
	}
}

func merge(c, over firebasetest.Claims) firebasetest.Claims {
	for k, v := range over {
		c[k] = v
	}
	return c
}

func TestVerifyAccepts(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	now := iss.Clock().Now()
	n := now.Unix()

	cases := []struct {
		name   string
		opts   func(*Options)
		token  func() string
		tenant string
		sub    string
		owner  string
	}{
		{name: "defaults", token: func() string { return iss.Mint(nil) },
			owner: "firebase:" + projectA + "//" + firebasetest.DefaultSubject},
		{name: "project id with surrounding white space", opts: func(o *Options) { o.ProjectIDs = []string{" " + projectA + "\n"} },
			token: func() string { return iss.Mint(nil) }},
		{name: "tenant token", opts: func(o *Options) { o.Tenants = []string{"", "tenant-a"} },
			token: func() string {
				return iss.Mint(firebasetest.Claims{"firebase": firebasetest.Firebase("password", "tenant-a")})
			},
			tenant: "tenant-a", owner: "firebase:" + projectA + "/tenant-a/" + firebasetest.DefaultSubject},
		{name: "tenant token, tenants only", opts: func(o *Options) { o.Tenants = []string{"tenant-a\n"} },
			token: func() string {
				return iss.Mint(firebasetest.Claims{"firebase": firebasetest.Firebase("google.com", "tenant-a")})
			},
			tenant: "tenant-a"},
		{name: "second configured project", opts: func(o *Options) { o.ProjectIDs = []string{projectA, "keywarden-test-b"} },
			token: func() string {
				return iss.Mint(firebasetest.Claims{"aud": "keywarden-test-b", "iss": "https://securetoken.google.com/keywarden-test-b"})
			},
			owner: "firebase:keywarden-test-b//" + firebasetest.DefaultSubject},
		{name: "128-character sub with slash", token: func() string { return iss.Mint(firebasetest.Claims{"sub": strings.Repeat("é", 127) + "/"}) },
			sub: strings.Repeat("é", 127) + "/"},
		{name: "expired within leeway", token: func() string {
			return iss.Mint(firebasetest.Claims{"iat": n - 3600, "auth_time": n - 3600, "exp": n - 59})
		}},
		{name: "iat, nbf, auth_time ahead within leeway", token: func() string {
			return iss.Mint(firebasetest.Claims{"iat": n + 59, "nbf": n + 59, "auth_time": n + 59})
		}},
		{name: "unknown header and claim members ignored", token: func() string {
			return iss.Sign(firebasetest.Token{Header: map[string]any{"alg": "RS256", "kid": iss.Key().Kid, "typ": "JWT", "x5u": "https://attacker.example/"},
				Claims: merge(iss.Claims(), firebasetest.Claims{"custom": map[string]any{"role": "admin"}})})
		}},
		{name: "all policies met", opts: func(o *Options) {
			o.AllowedProviders = []string{"password"}
			o.RequireEmailVerified = true
			o.MaxAuthAge = 10 * time.Minute
			o.MaxIssuedAge = 10 * time.Minute
		}, token: func() string { return iss.Mint(firebasetest.Claims{"auth_time": n - 540, "iat": n - 540}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, iss, tc.opts)
			id, err := v.Verify(context.Background(), tc.token())
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			sub := tc.sub
			if sub == "" {
				sub = firebasetest.DefaultSubject
			}
			if id.Subject != sub || id.Tenant != tc.tenant {
				t.Errorf("identity %+v, want sub %q tenant %q", id, sub, tc.tenant)
			}
			if tc.owner != "" && id.Owner() != tc.owner {
				t.Errorf("Owner() = %q, want %q", id.Owner(), tc.owner)
			}
			if id.Expiry.Before(now.Add(-time.Minute)) || id.IssuedAt.IsZero() || id.AuthTime.IsZero() {
				t.Errorf("times not read: %+v", id)
			}
		})
	}
}

func TestVerifyIdentityFields(t *testing.T) {
	iss := firebasetest.NewIssuer(t, projectA)
	v := newVerifier(t, iss, func(o *Options) { o.Tenants = []string{"tenant-7"} })
	n := iss.Clock().Now().Unix()
	id, err := v.Verify(context.Background(), iss.Mint(firebasetest.Claims{
		"sub": "abc", "iat": n - 10, "auth_time": n - 100, "exp": n + 3590, "email_verified": false,
		"firebase": firebasetest.Firebase("google.com", "tenant-7"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{ProjectID: projectA, Tenant: "tenant-7", Subject: "abc",
		IssuedAt: time.Unix(n-10, 0), AuthTime: time.Unix(n-100, 0), Expiry: time.Unix(n+3590, 0),
		SignInProvider: "google.com", EmailVerified: false}
	if *id != want {
		t.Errorf("identity\n got %+v\nwant %+v", *id, want)
	}
	if id.Owner() != "firebase:"+projectA+"/tenant-7/abc" {
		t.Errorf("Owner() = %q", id.Owner())
	}
	if err := v.CheckAuthAge(id, 30*time.Second); !errors.Is(err, ErrAuthTooOld) {
		t.Errorf("CheckAuthAge(30s) = %v, want auth_too_old", err)
	}
	if err := v.CheckAuthAge(id, 2*time.Minute); err != nil {
		t.Errorf("CheckAuthAge(2m) = %v", err)
	}
	if err := v.CheckAuthAge(id, 0); err != nil {
		t.Errorf("CheckAuthAge(0) = %v", err)
	}
}

// A token for project A must not open project B's records: on B's
// configuration it is refused, whichever way it is dressed up.
func TestProjectATokenOnProjectB(t *testing.T) {
	clock := firebasetest.NewClock(time.Now().Truncate(time.Second))
	a := firebasetest.NewIssuer(t, "keywarden-proj-a", firebasetest.WithClock(clock))
	b := firebasetest.NewIssuer(t, "keywarden-proj-b", firebasetest.WithClock(clock))
	vb := newVerifier(t, b, nil)
	ctx := context.Background()

	if _, err := vb.Verify(ctx, b.Mint(nil)); err != nil {
		t.Fatalf("B's own token refused: %v", err)
	}
	tok := a.Mint(nil)
	id, err := vb.Verify(ctx, tok)
	wantRefusal(t, id, err, tok, 401, "wrong_audience")

	// A's key with B's claims: A's kid is not in B's set.
	tok = a.Mint(firebasetest.Claims{"aud": b.ProjectID(), "iss": "https://securetoken.google.com/" + b.ProjectID()})
	id, err = vb.Verify(ctx, tok)
	wantRefusal(t, id, err, tok, 401, "token_kid_unknown")

	// A's key under B's kid.
	tok = a.Sign(firebasetest.Token{Kid: b.Key().Kid, Claims: b.Claims()})
	id, err = vb.Verify(ctx, tok)
	wantRefusal(t, id, err, tok, 401, "token_signature")

	// Both projects configured on one key set (as at Google, where every
	// project shares the securetoken keys): same uid, different owners.
	vab := newVerifier(t, a, func(o *Options) { o.ProjectIDs = []string{a.ProjectID(), b.ProjectID()} })
	idA, err := vab.Verify(ctx, a.Mint(nil))
	if err != nil {
		t.Fatal(err)
	}
	idB, err := vab.Verify(ctx, a.Mint(firebasetest.Claims{"aud": b.ProjectID(), "iss": "https://securetoken.google.com/" + b.ProjectID()}))
	if err != nil {
		t.Fatal(err)
	}
	if idA.Subject != idB.Subject || idA.Owner() == idB.Owner() {
		t.Errorf("owners %q and %q for one uid in two projects", idA.Owner(), idB.Owner())
	}
}

func TestOptionsValidate(t *testing.T) {
	ok := Options{ProjectIDs: []string{"p"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("minimal options: %v", err)
	}
	cases := map[string]Options{
		"no project":            {},
		"blank project":         {ProjectIDs: []string{" \n"}},
		"project with slash":    {ProjectIDs: []string{"a/b"}},
		"duplicate project":     {ProjectIDs: []string{"p", "p\n"}},
		"tenant with slash":     {ProjectIDs: []string{"p"}, Tenants: []string{"t/x"}},
		"duplicate tenant":      {ProjectIDs: []string{"p"}, Tenants: []string{"", " "}},
		"empty provider":        {ProjectIDs: []string{"p"}, AllowedProviders: []string{""}},
		"url and file":          {ProjectIDs: []string{"p"}, CertsURL: "https://x.example/", CertsFile: "/f"},
		"http to remote":        {ProjectIDs: []string{"p"}, CertsURL: "http://www.googleapis.com/x"},
		"ftp":                   {ProjectIDs: []string{"p"}, CertsURL: "ftp://127.0.0.1/x"},
		"no host":               {ProjectIDs: []string{"p"}, CertsURL: "https:///x"},
		"negative leeway":       {ProjectIDs: []string{"p"}, Leeway: -time.Second},
		"leeway over 5m":        {ProjectIDs: []string{"p"}, Leeway: 6 * time.Minute},
		"negative auth age":     {ProjectIDs: []string{"p"}, MaxAuthAge: -1},
		"negative issued age":   {ProjectIDs: []string{"p"}, MaxIssuedAge: -1},
		"refetch under 1s":      {ProjectIDs: []string{"p"}, RefetchInterval: time.Millisecond},
		"negative max stale":    {ProjectIDs: []string{"p"}, MaxStale: -1},
		"max stale over a week": {ProjectIDs: []string{"p"}, MaxStale: 8 * 24 * time.Hour},
	}
	for name, o := range cases {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, o)
		}
		if _, err := New(context.Background(), o); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
	good := []Options{
		{ProjectIDs: []string{"p"}, CertsURL: "http://127.0.0.1:1/x"},
		{ProjectIDs: []string{"p"}, CertsURL: "http://[::1]:1/x"},
		{ProjectIDs: []string{"p"}, CertsURL: "http://localhost/x", Leeway: 5 * time.Minute, Tenants: []string{"", "t1"}},
	}
	for _, o := range good {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	// Validate does not change the options.
	o := Options{ProjectIDs: []string{" p\n"}}
	_ = o.Validate()
	if o.ProjectIDs[0] != " p\n" || o.Leeway != 0 || o.CertsURL != "" {
		t.Errorf("Validate changed the options: %+v", o)
	}
}

// TestTokenCharacterSet: each of the 256 byte values, put into a token,
// is refused as outside base64url exactly when it is not A–Z, a–z, 0–9,
// '-', '_' or '.'.
func TestTokenCharacterSet(t *testing.T) {
	for c := range 256 {
		raw := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0" + string([]byte{byte(c)}) + ".c2ln"
		_, err := parseToken(raw)
		outside := err != nil && strings.Contains(err.Message, "outside base64url")
		want := !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.')
		if outside != want {
			t.Fatalf("byte %#x: refused as outside base64url = %v, want %v (%v)", c, outside, want, err)
		}
		if want && err.Code != "token_malformed" {
			t.Fatalf("byte %#x: code %q", c, err.Code)
		}
	}
}
