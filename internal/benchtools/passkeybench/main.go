// Command passkeybench measures the passkey release (begin + finish) of
// Keywarden beside a bare go-webauthn server that keeps users in maps, with
// the same load generator (scripts/bench.sh; docs/BENCHMARKS.md). wrk cannot
// sign WebAuthn assertions, so this generator does: 64 workers, each a
// software authenticator (ES256, real signatures) looping begin → sign →
// finish for its own user.
//
//	passkeybench bare -addr A -origin O                     the baseline server
//	passkeybench load -target keywarden|bare -url U [-admin-key K] [-c 64] [-d 10s]
//
// A benchmark tool, not part of the appliance.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/keywarden/keywarden/internal/softauthn"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: passkeybench bare|load [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18811", "bare: listen address")
	origin := fs.String("origin", "http://localhost:18811", "WebAuthn origin")
	target := fs.String("target", "keywarden", "load: keywarden or bare")
	url := fs.String("url", "http://127.0.0.1:18811", "load: server URL")
	adminKey := fs.String("admin-key", "", "load: Keywarden admin API key")
	conc := fs.Int("c", 64, "load: concurrent workers (one user each)")
	dur := fs.Duration("d", 10*time.Second, "load: duration")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "bare":
		bare(*addr, *origin)
	case "load":
		load(*target, *url, *origin, *adminKey, *conc, *dur)
	}
}

// --- the bare go-webauthn server ------------------------------------------

type user struct {
	id    []byte
	creds []webauthn.Credential
	key   []byte
}

func (u *user) WebAuthnID() []byte                         { return u.id }
func (u *user) WebAuthnName() string                       { return string(u.id) }
func (u *user) WebAuthnDisplayName() string                { return string(u.id) }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func bare(addr, origin string) {
	wa, err := webauthn.New(&webauthn.Config{RPID: "localhost", RPDisplayName: "bare", RPOrigins: []string{origin}})
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	users := map[string]*user{}
	sessions := map[string]*webauthn.SessionData{}
	newSession := func(s *webauthn.SessionData) string {
		var b [16]byte
		rand.Read(b[:])
		id := base64.RawURLEncoding.EncodeToString(b[:])
		mu.Lock()
		sessions[id] = s
		mu.Unlock()
		return id
	}
	takeSession := func(id string) *webauthn.SessionData {
		mu.Lock()
		defer mu.Unlock()
		s := sessions[id]
		delete(sessions, id)
		return s
	}
	type req struct {
		UserID     string          `json:"userId"`
		SessionID  string          `json:"sessionId"`
		Credential json.RawMessage `json:"credential"`
		Key        string          `json:"key"`
	}
	read := func(r *http.Request) (req, error) {
		var q req
		err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&q)
		return q, err
	}
	fail := func(w http.ResponseWriter, code int, err error) { http.Error(w, err.Error(), code) }
	http.HandleFunc("POST /register/begin", func(w http.ResponseWriter, r *http.Request) {
		q, err := read(r)
		if err != nil {
			fail(w, 400, err)
			return
		}
		mu.Lock()
		u := users[q.UserID]
		if u == nil {
			u = &user{id: []byte(q.UserID)}
			users[q.UserID] = u
		}
		mu.Unlock()
		opts, s, err := wa.BeginRegistration(u, webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired))
		if err != nil {
			fail(w, 500, err)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"sessionId": newSession(s), "publicKey": opts.Response})
	})
	http.HandleFunc("POST /register/finish", func(w http.ResponseWriter, r *http.Request) {
		q, err := read(r)
		if err != nil {
			fail(w, 400, err)
			return
		}
		s := takeSession(q.SessionID)
		mu.Lock()
		u := users[q.UserID]
		mu.Unlock()
		if s == nil || u == nil {
			fail(w, 400, fmt.Errorf("unknown session"))
			return
		}
		parsed, err := protocol.ParseCredentialCreationResponseBytes(q.Credential)
		if err != nil {
			fail(w, 400, err)
			return
		}
		c, err := wa.CreateCredential(u, *s, parsed)
		if err != nil {
			fail(w, 400, err)
			return
		}
		key, _ := base64.StdEncoding.DecodeString(q.Key)
		mu.Lock()
		u.creds = append(u.creds, *c)
		u.key = key
		mu.Unlock()
		w.WriteHeader(201)
	})
	http.HandleFunc("POST /login/begin", func(w http.ResponseWriter, r *http.Request) {
		q, err := read(r)
		if err != nil {
			fail(w, 400, err)
			return
		}
		mu.Lock()
		u := users[q.UserID]
		mu.Unlock()
		if u == nil {
			fail(w, 404, fmt.Errorf("no user"))
			return
		}
		opts, s, err := wa.BeginLogin(u, webauthn.WithUserVerification(protocol.VerificationRequired))
		if err != nil {
			fail(w, 500, err)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"sessionId": newSession(s), "publicKey": opts.Response})
	})
	http.HandleFunc("POST /login/finish", func(w http.ResponseWriter, r *http.Request) {
		q, err := read(r)
		if err != nil {
			fail(w, 400, err)
			return
		}
		s := takeSession(q.SessionID)
		mu.Lock()
		u := users[q.UserID]
		mu.Unlock()
		if s == nil || u == nil {
			fail(w, 400, fmt.Errorf("unknown session"))
			return
		}
		parsed, err := protocol.ParseCredentialRequestResponseBytes(q.Credential)
		if err != nil {
			fail(w, 400, err)
			return
		}
		if _, err := wa.ValidateLogin(u, *s, parsed); err != nil {
			fail(w, 401, err)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"key": base64.StdEncoding.EncodeToString(u.key)})
	})
	log.Fatal(http.ListenAndServe(addr, nil))
}

// --- the load generator ---------------------------------------------------

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}

func post(url, bearer string, body any, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, rb)
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

type session struct {
	CeremonyID string          `json:"ceremonyId"`
	SessionID  string          `json:"sessionId"`
	PublicKey  json.RawMessage `json:"publicKey"`
	Token      string          `json:"token"`
}

// flow is one target's begin/finish calls.
type flow struct {
	register func(a *softauthn.Authenticator, userID string) error
	release  func(a *softauthn.Authenticator, userID string) error
}

func flows(target, url, origin, adminKey string) flow {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	if target == "bare" {
		return flow{
			register: func(a *softauthn.Authenticator, uid string) error {
				var s session
				if err := post(url+"/register/begin", "", map[string]string{"userId": uid}, &s); err != nil {
					return err
				}
				cred, _, err := a.Create(s.PublicKey, origin)
				if err != nil {
					return err
				}
				return post(url+"/register/finish", "", map[string]any{"userId": uid, "sessionId": s.SessionID, "credential": json.RawMessage(cred), "key": key}, nil)
			},
			release: func(a *softauthn.Authenticator, uid string) error {
				var s session
				if err := post(url+"/login/begin", "", map[string]string{"userId": uid}, &s); err != nil {
					return err
				}
				cred, err := a.Get(s.PublicKey, origin)
				if err != nil {
					return err
				}
				var out struct{ Key string }
				if err := post(url+"/login/finish", "", map[string]any{"userId": uid, "sessionId": s.SessionID, "credential": json.RawMessage(cred)}, &out); err != nil {
					return err
				}
				if out.Key != key {
					return fmt.Errorf("wrong key")
				}
				return nil
			},
		}
	}
	return flow{
		register: func(a *softauthn.Authenticator, uid string) error {
			var tok session
			if err := post(url+"/v1/admin/users/"+uid+"/session-tokens", adminKey, map[string]string{}, &tok); err != nil {
				return err
			}
			var s session
			if err := post(url+"/v1/passkeys/registration/begin", tok.Token, map[string]string{}, &s); err != nil {
				return err
			}
			cred, _, err := a.Create(s.PublicKey, origin)
			if err != nil {
				return err
			}
			return post(url+"/v1/passkeys/registration/finish", "", map[string]any{"ceremonyId": s.CeremonyID, "credential": json.RawMessage(cred), "key": key}, nil)
		},
		release: func(a *softauthn.Authenticator, uid string) error {
			var s session
			if err := post(url+"/v1/passkeys/authentication/begin", "", map[string]string{"userId": uid}, &s); err != nil {
				return err
			}
			cred, err := a.Get(s.PublicKey, origin)
			if err != nil {
				return err
			}
			var out struct{ Key string }
			if err := post(url+"/v1/passkeys/authentication/finish", "", map[string]any{"ceremonyId": s.CeremonyID, "credential": json.RawMessage(cred)}, &out); err != nil {
				return err
			}
			if out.Key != key {
				return fmt.Errorf("wrong key")
			}
			return nil
		},
	}
}

func load(target, url, origin, adminKey string, conc int, dur time.Duration) {
	f := flows(target, url, origin, adminKey)
	auths := make([]*softauthn.Authenticator, conc)
	for i := range conc {
		auths[i] = softauthn.New([16]byte{1})
		if err := f.register(auths[i], fmt.Sprintf("bench-user-%03d", i)); err != nil {
			log.Fatalf("register: %v", err)
		}
	}
	var ok, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr atomic.Value
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := f.release(auths[i], fmt.Sprintf("bench-user-%03d", i)); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, time.Since(t))
				ok.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := time.Duration(0)
	if len(lat) > 0 {
		p99 = lat[len(lat)*99/100]
	}
	fmt.Printf("RESULT %s %.1f %d %d %d\n", target, float64(ok.Load())/dur.Seconds(), ok.Load(), errs.Load(), p99.Microseconds())
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "first error:", e)
	}
}
