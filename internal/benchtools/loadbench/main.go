// Command loadbench holds the stand-ins of Keywarden's load benchmarks
// (scripts/bench.sh drives them with wrk; see docs/BENCHMARKS.md):
//
//	loadbench issuer -addr A -project P -token-out F   serve certificates in Google's format, write a token
//	                 [-tokens N]                       … N tokens of distinct users, one a line
//	loadbench bare   -addr A -project P -certs URL     the baseline: verify with golang-jwt, answer from a map
//
// It is a benchmark tool, not part of the appliance.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: loadbench issuer|bare [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	project := fs.String("project", "bench-project", "Firebase project id")
	tokenOut := fs.String("token-out", "", "issuer: write a fresh ID token here")
	certs := fs.String("certs", "", "bare: certificates URL")
	tokens := fs.Int("tokens", 1, "issuer: how many tokens (of distinct users: bench-user-0001, …) to write, one a line")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "issuer":
		issuer(*addr, *project, *tokenOut, *tokens)
	case "bare":
		bare(*addr, *project, *certs)
	default:
		log.Fatal("unknown mode")
	}
}

func issuer(addr, project, tokenOut string, tokens int) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "securetoken.system.gserviceaccount.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kid := "bench-kid-1"
	body, _ := json.Marshal(map[string]string{kid: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))})
	now := time.Now()
	var out []string
	for i := 1; i <= max(tokens, 1); i++ {
		user := fmt.Sprintf("bench-user-%04d", i)
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"aud": project, "iss": "https://securetoken.google.com/" + project, "sub": user, "user_id": user,
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "auth_time": now.Add(-time.Minute).Unix(),
			"firebase": map[string]any{"sign_in_provider": "password", "identities": map[string]any{}},
		})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			log.Fatal(err)
		}
		out = append(out, s)
	}
	if err := os.WriteFile(tokenOut, []byte(strings.Join(out, "\n")), 0o600); err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/certs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(addr, nil))
}

// bare is the baseline the issue sets: verify the token with golang-jwt
// against the same certificates, answer the key from a map.
func bare(addr, project, certsURL string) {
	resp, err := http.Get(certsURL)
	if err != nil {
		log.Fatal(err)
	}
	var pems map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&pems); err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	keys := map[string]*rsa.PublicKey{}
	for kid, p := range pems {
		b, _ := pem.Decode([]byte(p))
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			log.Fatal(err)
		}
		keys[kid] = c.PublicKey.(*rsa.PublicKey)
	}
	var mu sync.RWMutex
	store := map[string][]byte{"bench-user-0001": []byte("0123456789abcdef0123456789abcdef")}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(project),
		jwt.WithIssuer("https://securetoken.google.com/"+project), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	http.HandleFunc("/v1/firebase/key", func(w http.ResponseWriter, r *http.Request) {
		raw := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		tok, err := parser.Parse(raw, func(t *jwt.Token) (any, error) {
			k, ok := keys[fmt.Sprint(t.Header["kid"])]
			if !ok {
				return nil, fmt.Errorf("unknown kid")
			}
			return k, nil
		})
		if err != nil {
			http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
			return
		}
		sub, _ := tok.Claims.GetSubject()
		mu.RLock()
		k, ok := store[sub]
		mu.RUnlock()
		if !ok {
			http.Error(w, `{"error":{"code":"not_found"}}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"key": base64.StdEncoding.EncodeToString(k)})
	})
	log.Fatal(http.ListenAndServe(addr, nil))
}
