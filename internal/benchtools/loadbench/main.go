// Command loadbench holds the stand-ins of Keywarden's load benchmarks
// (scripts/bench.sh drives them with wrk; see docs/BENCHMARKS.md):
//
//	loadbench issuer -addr A -project P -token-out F   serve certificates in Google's format, write a token
//	                 [-tokens N]                       … N tokens of distinct users, one a line
//	loadbench bare   -addr A -project P -certs URL     the baseline: verify with golang-jwt, answer from a map
//	loadbench mint   -project P -users N -dir D        the cold case's tokens (see mint)
//	loadbench put    -url U -tokens F                  store one key per token of F (the cold case's users)
//
// The issuer signs with a key derived from -seed (firebasetest.DeterministicKey),
// so that tokens minted by an earlier run stay valid for a later one: minting
// is the slow part of the cold case (one RSA signature per token).
//
// It is a benchmark tool, not part of the appliance.
package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: loadbench issuer|bare|mint|put [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	project := fs.String("project", "bench-project", "Firebase project id")
	seed := fs.Uint64("seed", 19, "issuer, mint: seed of the signing key")
	tokenOut := fs.String("token-out", "", "issuer: write a fresh ID token here")
	certs := fs.String("certs", "", "bare: certificates URL")
	users := fs.Int("users", 100000, "mint: distinct users (two tokens each)")
	dir := fs.String("dir", "", "mint: directory of store.tokens and read.tokens (kept while valid)")
	url := fs.String("url", "", "put: the key URL")
	tokens := fs.String("tokens", "", "put: file of tokens, one a line")
	conc := fs.Int("c", 32, "put: concurrent clients")
	count := fs.Int("n", 1, "issuer: how many tokens (of distinct users: bench-user-0001, …) to write, one a line")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "issuer":
		issuer(*addr, *project, *seed, *tokenOut, *count)
	case "bare":
		bare(*addr, *project, *certs)
	case "mint":
		mint(*project, *seed, *users, *dir)
	case "put":
		put(*url, *tokens, *conc)
	default:
		log.Fatal("unknown mode")
	}
}

// tb lets firebasetest's issuer run outside a test: failures end the program.
type tb struct{ testing.TB }

func (tb) Helper()                           {}
func (tb) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }
func (tb) Cleanup(func())                    {}

// benchIssuer is firebasetest's issuer signing with the key of seed.
func benchIssuer(project string, seed uint64) (*firebasetest.Issuer, firebasetest.Key) {
	now := time.Now()
	k := firebasetest.DeterministicKey(tb{}, seed, now.Add(-48*time.Hour), now.Add(48*time.Hour))
	return firebasetest.NewIssuer(tb{}, project, firebasetest.WithKey(k)), k
}

// issuer serves the certificates at addr/certs and writes n tokens of
// distinct users (bench-user-0001, …), one a line, to tokenOut.
func issuer(addr, project string, seed uint64, tokenOut string, n int) {
	iss, k := benchIssuer(project, seed)
	body := firebasetest.CertsJSON(k)
	var out []string
	for i := 1; i <= max(n, 1); i++ {
		user := fmt.Sprintf("bench-user-%04d", i)
		out = append(out, iss.Mint(firebasetest.Claims{"sub": user, "user_id": user}))
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

// mint writes the cold case's tokens: for each of users distinct users
// ("cold-0000001", …) a token that stores the key (dir/store.tokens) and
// another one, different bytes (iat one second earlier, as a refreshed
// token differs), that reads it (dir/read.tokens), line i of each for
// user i. Tokens live an hour: files minted less than 35 minutes ago with
// at least as many users are kept (dir/minted holds the time and count).
func mint(project string, seed uint64, users int, dir string) {
	if b, err := os.ReadFile(filepath.Join(dir, "minted")); err == nil {
		var at int64
		var n int
		if _, err := fmt.Sscan(string(b), &at, &n); err == nil && n >= users && time.Since(time.Unix(at, 0)) < 35*time.Minute {
			log.Printf("mint: reusing %d users' tokens minted %s ago", n, time.Since(time.Unix(at, 0)).Round(time.Second))
			return
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Fatal(err)
	}
	iss, _ := benchIssuer(project, seed)
	now := iss.Clock().Now()
	store := make([]string, users)
	read := make([]string, users)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= users {
					return
				}
				sub := fmt.Sprintf("cold-%07d", i)
				store[i] = iss.Mint(firebasetest.Claims{"sub": sub, "user_id": sub})
				read[i] = iss.Mint(firebasetest.Claims{"sub": sub, "user_id": sub,
					"iat": now.Unix() - 1, "auth_time": now.Unix() - 1})
				if i > 0 && i%20000 == 0 {
					log.Printf("mint: %d of %d users", i, users)
				}
			}
		}()
	}
	wg.Wait()
	for name, toks := range map[string][]string{"store.tokens": store, "read.tokens": read} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(toks, "\n")+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "minted"), []byte(fmt.Sprintf("%d %d\n", now.Unix(), users)), 0o600); err != nil {
		log.Fatal(err)
	}
}

// put stores a 32-byte key with each token of file (PUT url), c at a time.
// It sets the cold case up; it is not what is measured.
func put(url, file string, c int) {
	b, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	toks := strings.Fields(string(b))
	body := []byte(`{"key":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(toks) {
					return
				}
				req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+toks[i])
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		log.Fatalf("put: %d of %d stores failed", n, len(toks))
	}
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
		if r.Method == http.MethodPut {
			var req struct{ Key []byte }
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Key) != 32 {
				http.Error(w, `{"error":{"code":"invalid_key"}}`, http.StatusBadRequest)
				return
			}
			mu.Lock()
			store[sub] = req.Key
			mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			return
		}
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
