// Command scalebench fills a Keywarden store to millions of keys through the
// admin import and measures releases against it (issue 19, item 3;
// scripts/bench-scale.sh; docs/BENCHMARKS.md):
//
//	scalebench import  -url U -admin-key K -from A -n N [-batch 500] [-c 8]
//	                   the keys of users A … A+N-1 (Firebase owners, 32 random bytes each)
//	scalebench mint    -users N -sample S -out F     release tokens of S users spread over 0 … N-1
//	scalebench release -url U -tokens F [-c 4] [-d 20s] [-pid P]
//	                   releases with those tokens, latency percentiles and the server's CPU per release
//	scalebench stores  -url U -tokens F [-c 16] [-d 10s]
//	                   Firebase stores, one never-stored user per request, 16 writers
//	scalebench passkeys -url U -admin-key K -origin O -from A -n N [-c 8]
//	                   register N passkey users (session token, registration
//	                   begin + finish with a software authenticator, a key
//	                   stored with the credential): the only path that writes
//	                   credentials, the import has none
//	scalebench dbstat  -db FILE
//	                   where a bbolt file's bytes go: per bucket keys, pages, fill
//
// User i is the Firebase user whose uid is uid(i): 28 characters derived by
// SHA-256 from i, so consecutive users land at random places of the store's
// B+tree, as real Firebase uids do (sequential ids would fill pages
// better than production ever does). Tokens are signed by the key
// loadbench's issuer publishes (the same seed).
//
// A benchmark tool, not part of the appliance.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: scalebench import|mint|release|stores [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "", "import: the admin listener's base URL; release, stores: the key URL")
	adminKey := fs.String("admin-key", "", "import: admin API key")
	project := fs.String("project", "bench-project", "Firebase project id")
	seed := fs.Uint64("seed", 19, "mint: seed of the issuer's signing key (loadbench's)")
	from := fs.Int("from", 0, "import: first user")
	n := fs.Int("n", 10000, "import: users to import")
	batch := fs.Int("batch", 500, "import: items per request")
	conc := fs.Int("c", 8, "concurrent requests")
	users := fs.Int("users", 10000, "mint: users in the store (0 … users-1)")
	sample := fs.Int("sample", 2000, "mint: tokens to make, of users spread evenly over the store")
	offset := fs.Int("offset", 0, "mint: first user of the spread (stores: users never imported, e.g. 1e9)")
	out := fs.String("out", "", "mint: token file to write")
	tokens := fs.String("tokens", "", "release, stores: token file")
	dur := fs.Duration("d", 20*time.Second, "release, stores: duration")
	origin := fs.String("origin", "", "passkeys: the WebAuthn origin the server allows")
	dbFile := fs.String("db", "", "dbstat: a bbolt file (a copy: the server holds the live one's lock)")
	pid := fs.Int("pid", 0, "release, stores: the server's pid, to report its CPU time per request")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "import":
		importKeys(*url, *adminKey, *project, *from, *n, *batch, *conc)
	case "mint":
		mint(*project, *seed, *users, *sample, *offset, *out)
	case "release":
		drive(http.MethodGet, *url, *tokens, *conc, *dur, *pid)
	case "stores":
		drive(http.MethodPut, *url, *tokens, *conc, *dur, *pid)
	case "passkeys":
		passkeys(*url, *adminKey, *origin, *from, *n, *conc)
	case "dbstat":
		dbstat(*dbFile)
	default:
		log.Fatal("unknown mode")
	}
}

// uid is user i's Firebase uid: 28 characters of base64url of SHA-256(i).
func uid(i int) string {
	h := sha256.Sum256([]byte("keywarden-scale-" + strconv.Itoa(i)))
	return base64.RawURLEncoding.EncodeToString(h[:21])
}

type item struct {
	Owner  string `json:"owner"`
	Method string `json:"method"`
	Key    []byte `json:"key"`
}

type result struct {
	Index   int    `json:"index"`
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// importKeys imports users from … from+n-1, batch items per request, c
// requests at a time. An item already stored (key_exists, from an earlier
// run stopped half way) counts as done; any other failure ends the run.
func importKeys(base, adminKey, project string, from, n, batch, c int) {
	client := &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	var next, done, existed atomic.Int64
	next.Store(int64(from))
	end := int64(from + n)
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				d := done.Load()
				log.Printf("import: %d of %d (%.0f/s now, %.0f/s overall)", d, n, float64(d-last)/now.Sub(lastAt).Seconds(), float64(d)/now.Sub(start).Seconds())
				last, lastAt = d, now
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items := make([]item, 0, batch)
			for {
				first := next.Add(int64(batch)) - int64(batch)
				if first >= end {
					return
				}
				items = items[:0]
				for i := first; i < min(first+int64(batch), end); i++ {
					k := make([]byte, 32)
					rand.Read(k)
					items = append(items, item{Owner: "firebase:" + project + "//" + uid(int(i)), Method: "FIREBASE", Key: k})
				}
				body, _ := json.Marshal(map[string]any{"items": items})
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/admin/keys/import", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+adminKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				for try := 1; err != nil && try < 5; try++ {
					// A request cut by the server's write timeout on a busy
					// machine: send it again (its stored items answer
					// key_exists and count as done).
					log.Printf("import: %v; again", err)
					req, _ = http.NewRequest(http.MethodPost, base+"/v1/admin/keys/import", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+adminKey)
					req.Header.Set("Content-Type", "application/json")
					resp, err = client.Do(req)
				}
				if err != nil {
					log.Fatalf("import: %v", err)
				}
				rb, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					log.Fatalf("import: %s: %s", resp.Status, rb)
				}
				var out struct{ Results []result }
				if err := json.Unmarshal(rb, &out); err != nil {
					log.Fatalf("import: answer: %v", err)
				}
				for _, r := range out.Results {
					switch {
					case r.Status == http.StatusCreated:
					case r.Code == "key_exists":
						existed.Add(1)
					default:
						log.Fatalf("import: item %d: %d %s %s", r.Index, r.Status, r.Code, r.Message)
					}
				}
				done.Add(int64(len(items)))
			}
		}()
	}
	wg.Wait()
	close(stop)
	el := time.Since(start)
	fmt.Printf("RESULT import %d keys in %.1f s: %.0f keys/s (%d already stored)\n", done.Load(), el.Seconds(), float64(done.Load())/el.Seconds(), existed.Load())
}

type tb struct{ testing.TB }

func (tb) Helper()                           {}
func (tb) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }
func (tb) Cleanup(func())                    {}

// mint writes release tokens of sample users spread evenly over offset …
// offset+users-1, one a line, signed as loadbench's issuer signs.
func mint(project string, seed uint64, users, sample, offset int, out string) {
	now := time.Now()
	k := firebasetest.DeterministicKey(tb{}, seed, now.Add(-48*time.Hour), now.Add(48*time.Hour))
	iss := firebasetest.NewIssuer(tb{}, project, firebasetest.WithKey(k))
	toks := make([]string, sample)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1)) - 1
				if j >= sample {
					return
				}
				u := uid(offset + int(int64(j)*int64(users)/int64(sample)))
				toks[j] = iss.Mint(firebasetest.Claims{"sub": u, "user_id": u})
			}
		}()
	}
	wg.Wait()
	if err := os.WriteFile(out, []byte(strings.Join(toks, "\n")+"\n"), 0o600); err != nil {
		log.Fatal(err)
	}
}

var storeBody = []byte(`{"key":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}`)

// drive sends method requests with the tokens of file in turn (each token
// once per pass) from c clients for d, and prints throughput, latency
// percentiles and, with pid, the server's CPU time per request.
func drive(method, url, file string, c int, d time.Duration, pid int) {
	b, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	toks := strings.Fields(string(b))
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	var next, failed, wrapped atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr sync.Once
	cpu0 := cpuTime(pid)
	start := time.Now()
	deadline := start.Add(d)
	// SIGINT or SIGTERM ends the run early, with its results (the backup
	// step runs releases until the backup is done).
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(toks) {
					if method == http.MethodPut {
						break // every user stored once: a store must be a new user's
					}
					if i == len(toks) {
						wrapped.Add(1)
					}
				}
				var body io.Reader
				if method == http.MethodPut {
					body = bytes.NewReader(storeBody)
				}
				req, _ := http.NewRequest(method, url, body)
				req.Header.Set("Authorization", "Bearer "+toks[i%len(toks)])
				if body != nil {
					req.Header.Set("Content-Type", "application/json")
				}
				t := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					rb, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						err = fmt.Errorf("%s %s", resp.Status, bytes.TrimSpace(rb))
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { log.Printf("first failed request: %v", err) })
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime(pid) - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p int) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, len(lat)*p/100)].Round(time.Microsecond)
	}
	perReq := ""
	if pid > 0 && len(lat) > 0 {
		perReq = fmt.Sprintf(", server CPU %.0f µs per request", float64(cpu.Microseconds())/float64(len(lat)))
	}
	if wrapped.Load() > 0 {
		log.Printf("note: more requests than tokens: tokens were reused (the token cache answers those)")
	}
	fmt.Printf("RESULT %s %d ok %d failed in %.1f s: %.0f/s, p50 %s p90 %s p99 %s%s\n",
		method, len(lat), failed.Load(), el.Seconds(), float64(len(lat))/el.Seconds(), pct(50), pct(90), pct(99), perReq)
}

// cpuTime is the user+system CPU time of process pid (/proc/pid/stat), 0
// without a pid.
func cpuTime(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// dbstat prints, for each bucket of a store file, its keys and what its
// pages hold: the file's bytes per key and how full its leaf pages are
// (random keys split pages half full; bbolt fills to FillPercent only on
// sequential inserts).
func dbstat(file string) {
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	fi, err := os.Stat(file)
	if err != nil {
		log.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		ps := int64(db.Info().PageSize)
		pages := tx.Size() / ps
		st := db.Stats()
		fmt.Printf("file %d bytes, %d pages of %d, %d free, %d pending free\n", fi.Size(), pages, ps, st.FreePageN, st.PendingPageN)
		var keys int64
		root := tx.Bucket([]byte("keywarden"))
		if root == nil {
			return fmt.Errorf("no root bucket")
		}
		return root.ForEach(func(name, v []byte) error {
			if v != nil {
				return nil
			}
			b := root.Bucket(name).Stats()
			if b.KeyN == 0 {
				return nil
			}
			keys += int64(b.KeyN)
			alloc := int64(b.LeafAlloc + b.BranchAlloc)
			fmt.Printf("bucket %-14s %9d keys  leaf pages %8d (%5.1f %% full)  branch pages %6d  %6.0f bytes per key in pages, %6.0f of payload\n",
				name, b.KeyN, b.LeafPageN+b.LeafOverflowN, 100*float64(b.LeafInuse)/float64(max(b.LeafAlloc, 1)), b.BranchPageN,
				float64(alloc)/float64(b.KeyN), float64(b.LeafInuse)/float64(b.KeyN))
			return nil
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}

func postJSON(client *http.Client, url, bearer string, body, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
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

// passkeys registers users pk-<from> … one passkey each (ES256, real
// signatures), each with a key, c at a time.
func passkeys(base, adminKey, origin string, from, n, c int) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	var next, done atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := softauthn.New([16]byte{1})
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				uid := fmt.Sprintf("pk-%08d", from+i)
				var tok struct{ Token string }
				if err := postJSON(client, base+"/v1/admin/users/"+uid+"/session-tokens", adminKey, map[string]string{}, &tok); err != nil {
					log.Fatal(err)
				}
				var begin struct {
					CeremonyID string          `json:"ceremonyId"`
					PublicKey  json.RawMessage `json:"publicKey"`
				}
				if err := postJSON(client, base+"/v1/passkeys/registration/begin", tok.Token, map[string]string{}, &begin); err != nil {
					log.Fatal(err)
				}
				cred, _, err := a.Create(begin.PublicKey, origin)
				if err != nil {
					log.Fatal(err)
				}
				if err := postJSON(client, base+"/v1/passkeys/registration/finish", "", map[string]any{"ceremonyId": begin.CeremonyID, "credential": json.RawMessage(cred), "key": key}, nil); err != nil {
					log.Fatal(err)
				}
				if d := done.Add(1); d%10000 == 0 {
					log.Printf("passkeys: %d of %d (%.0f/s)", d, n, float64(d)/time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("RESULT passkeys %d registered in %.1f s: %.0f/s\n", done.Load(), el.Seconds(), float64(done.Load())/el.Seconds())
}
