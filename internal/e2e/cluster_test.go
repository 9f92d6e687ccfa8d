package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keywarden/keywarden/cluster/join"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/internal/testutil/proc"
	"github.com/keywarden/keywarden/internal/testutil/vaultdev"
	"github.com/keywarden/keywarden/internal/tpmsim"
)

const (
	clusterE2EAdmin = "cluster-sh-e2e-admin-key-0123456789"
	// clusterOrigin is dev mode's passkey origin (and the demo page's).
	clusterOrigin = "http://localhost:8420"
)

// The addresses scripts/cluster.sh gives its nodes (i = 1…3) and HAProxy
// (i = 0), moved by the port offset the test picked.
func (c *shCluster) port(base, i int) int { return base + c.offset + i }
func (c *shCluster) public(i int) string {
	return fmt.Sprintf("http://127.0.0.1:%d", c.port(8440, i))
}
func (c *shCluster) admin(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", c.port(8450, i)) }
func (c *shCluster) lb() string         { return c.public(0) }

// freeOffset picks a KEYWARDEN_CLUSTER_PORT_OFFSET whose ports nobody
// listens on (a developer's own cluster.sh may run on the default ones).
func freeOffset(t *testing.T) int {
	t.Helper()
	for off := 1000; off < 5000; off += 100 {
		free := true
		for _, base := range []int{8440, 8450, 2380, 2390} {
			for i := 0; i <= 4 && free; i++ {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off+i))
				if err != nil {
					free = false
					break
				}
				l.Close()
			}
		}
		if free {
			return off
		}
	}
	t.Skip("no free port range for scripts/cluster.sh")
	return 0
}

// clusterLoadHTTP is the load's client (checked against openapi.yaml by
// TestMain). Keep-alive is on, as a real client's; a killed node's
// connections fail and are retried.
var clusterLoadHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// shCluster drives scripts/cluster.sh in its own folder.
type shCluster struct {
	root   string // KEYWARDEN_CLUSTER_DIR
	offset int    // KEYWARDEN_CLUSTER_PORT_OFFSET
	module string
	env    []string // KEYWARDEN_… for every node
}

func (c *shCluster) run(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(c.module, "scripts", "cluster.sh")}, args...)...)
	cmd.Dir = c.module
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARDEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Env = append(cmd.Env, "KEYWARDEN_CLUSTER_DIR="+c.root, fmt.Sprintf("KEYWARDEN_CLUSTER_PORT_OFFSET=%d", c.offset))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (c *shCluster) pid(t *testing.T, i int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.root, fmt.Sprintf("node%d", i), "pid"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// The pid is the node's own (not a shell's around it): a kill or
	// `cluster.sh down` must reach the appliance.
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err == nil && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "keywarden" {
		t.Fatalf("node%d/pid is %d, a %s, not the keywarden process", i, p, exe)
	}
	return p
}

// kill SIGKILLs node i and waits until it is gone.
func (c *shCluster) kill(t *testing.T, i int) {
	t.Helper()
	p := c.pid(t, i)
	if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL node%d: %v", i, err)
	}
	opsEventually(t, 10*time.Second, fmt.Sprintf("node%d gone", i), func() (bool, string) {
		return syscall.Kill(p, 0) != nil, "still there"
	})
}

func (c *shCluster) logs(i int) string {
	b, _ := os.ReadFile(filepath.Join(c.root, fmt.Sprintf("node%d", i), "log"))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// retrier sends a request until it gets an answer that is neither a
// connection error nor a 502/503/504 (a node being killed, HAProxy not yet
// aware of it), and counts the retries.
type retrier struct {
	retries atomic.Int64
	stop    atomic.Bool // give up retrying (the test is over)
}

type answer struct {
	status int
	body   []byte
}

func (r *retrier) do(method, url string, body []byte, hdr map[string]string) (answer, error) {
	var last error
	for attempt := 0; attempt < 200; attempt++ {
		if attempt > 0 {
			r.retries.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
		a, err := send(clusterLoadHTTP, method, url, body, hdr)
		switch {
		case err != nil:
			last = err
		case a.status == 502 || a.status == 503 || a.status == 504:
			last = fmt.Errorf("%s %s: %d %s", method, url, a.status, a.body)
		default:
			return a, nil
		}
		if r.stop.Load() {
			break
		}
	}
	return answer{}, last
}

func send(c *http.Client, method, url string, body []byte, hdr map[string]string) (answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		return answer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{resp.StatusCode, b}, nil
}

func jsonBody(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// acked is every acknowledged write: owner → key.
type acked struct {
	sync.Mutex
	firebase map[string][]byte // user id → key
	passkey  map[string][]byte
}

func (a *acked) put(m map[string][]byte, user string, key []byte) {
	a.Lock()
	m[user] = key
	a.Unlock()
}

// clusterLoad runs Firebase stores and releases of distinct users through
// HAProxy, and passkey ceremonies that begin on one node's public port and
// finish on another's, until stop is closed.
type clusterLoad struct {
	t     *testing.T
	c     *shCluster
	auth  *softauthn.Authenticator // the passkeys of the load's users
	iss   *firebasetest.Issuer
	r     *retrier
	acked *acked
	alive [4]atomic.Bool // node i answers (the passkey worker picks among them)
	errs  chan error
	wg    sync.WaitGroup
	stop  chan struct{}
	seq   atomic.Int64
	// portal, when set, adds Portal's TBS, webhooks and PasskeyStorage
	// to the load (cluster_portal_test.go).
	portal *portalLoad
}

func (l *clusterLoad) fbToken(user string) string {
	return l.iss.Mint(firebasetest.Claims{"sub": user, "user_id": user})
}

// storeAndRelease stores a fresh key for a new user through url and reads
// it back; a store acknowledged (200/201) is recorded.
func (l *clusterLoad) storeAndRelease(base, user string) error {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	auth := map[string]string{"Authorization": "Bearer " + l.fbToken(user)}
	a, err := l.r.do(http.MethodPut, base+"/v1/firebase/key", jsonBody(map[string]string{"key": base64.StdEncoding.EncodeToString(key)}), auth)
	if err != nil {
		return err
	}
	if a.status != 200 && a.status != 201 {
		return fmt.Errorf("store %s: %d %s", user, a.status, a.body)
	}
	l.acked.put(l.acked.firebase, user, key)
	return l.release(base, user, key)
}

func (l *clusterLoad) release(base, user string, want []byte) error {
	auth := map[string]string{"Authorization": "Bearer " + l.fbToken(user)}
	a, err := l.r.do(http.MethodGet, base+"/v1/firebase/key", nil, auth)
	if err != nil {
		return err
	}
	var out struct {
		Key string `json:"key"`
	}
	if a.status != 200 || json.Unmarshal(a.body, &out) != nil {
		return fmt.Errorf("release %s: %d %s", user, a.status, a.body)
	}
	if got, _ := base64.StdEncoding.DecodeString(out.Key); !bytes.Equal(got, want) {
		return fmt.Errorf("release %s: another key than the one stored", user)
	}
	return nil
}

// pick returns three live nodes starting after n (begin, finish, second
// finish): ceremonies cross nodes.
func (l *clusterLoad) pick(n int) []int {
	var out []int
	for k := 1; k <= 6 && len(out) < 3; k++ {
		i := (n+k)%3 + 1
		if l.alive[i].Load() {
			out = append(out, i)
		}
	}
	for len(out) < 3 && len(out) > 0 {
		out = append(out, out[0])
	}
	return out
}

var errCeremonyCut = errors.New("ceremony cut by a node failure")

// passkeyCeremony registers a passkey for a new user: the session and the
// begin on node a, the finish on node b (the key is acknowledged there);
// then an authentication begun on b and finished on c releases the key.
// A node failure in the middle restarts the whole ceremony (counted as a
// retry): a ceremony is single use, its finish is not replayed.
func (l *clusterLoad) passkeyCeremony(auth *softauthn.Authenticator, n int) error {
	nodes := l.pick(n)
	if len(nodes) == 0 {
		return errCeremonyCut
	}
	a, b, c := l.c.public(nodes[0]), l.c.public(nodes[1]), l.c.public(nodes[2])
	user := fmt.Sprintf("pk-%d", l.seq.Add(1))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	cut := func(x answer, err error, want int, what string) error {
		if err != nil || x.status == 502 || x.status == 503 || x.status == 504 {
			return errCeremonyCut
		}
		if x.status != want {
			return fmt.Errorf("%s: %d %s", what, x.status, x.body)
		}
		return nil
	}
	x, err := send(clusterLoadHTTP, http.MethodPost, a+"/demo/session", jsonBody(map[string]string{"userId": user}), map[string]string{"Origin": clusterOrigin})
	if err := cut(x, err, 201, "demo session"); err != nil {
		return err
	}
	var sess struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(x.body, &sess); err != nil {
		return err
	}
	x, err = send(clusterLoadHTTP, http.MethodPost, a+"/v1/passkeys/registration/begin", nil, map[string]string{"Authorization": "Bearer " + sess.Token})
	if err := cut(x, err, 200, "registration begin on node "+a); err != nil {
		return err
	}
	var begun struct {
		CeremonyID string          `json:"ceremonyId"`
		PublicKey  json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(x.body, &begun); err != nil {
		return err
	}
	cred, _, err := auth.Create(begun.PublicKey, clusterOrigin)
	if err != nil {
		return err
	}
	x, err = send(clusterLoadHTTP, http.MethodPost, b+"/v1/passkeys/registration/finish",
		jsonBody(map[string]any{"ceremonyId": begun.CeremonyID, "credential": json.RawMessage(cred), "key": base64.StdEncoding.EncodeToString(key)}), nil)
	if err := cut(x, err, 201, "registration finish on "+b+" (begun on "+a+")"); err != nil {
		return err
	}
	l.acked.put(l.acked.passkey, user, key)
	x, err = send(clusterLoadHTTP, http.MethodPost, b+"/v1/passkeys/authentication/begin", jsonBody(map[string]string{"userId": user}), nil)
	if err := cut(x, err, 200, "authentication begin on "+b); err != nil {
		return err
	}
	if err := json.Unmarshal(x.body, &begun); err != nil {
		return err
	}
	assertion, err := auth.Get(begun.PublicKey, clusterOrigin)
	if err != nil {
		return err
	}
	x, err = send(clusterLoadHTTP, http.MethodPost, c+"/v1/passkeys/authentication/finish",
		jsonBody(map[string]any{"ceremonyId": begun.CeremonyID, "credential": json.RawMessage(assertion)}), nil)
	if err := cut(x, err, 200, "authentication finish on "+c+" (begun on "+b+")"); err != nil {
		return err
	}
	var rel struct {
		Key string `json:"key"`
	}
	if json.Unmarshal(x.body, &rel) != nil || rel.Key != base64.StdEncoding.EncodeToString(key) {
		return fmt.Errorf("passkey release of %s: another key than the one stored", user)
	}
	return nil
}

func (l *clusterLoad) start(firebaseWorkers int) {
	l.stop = make(chan struct{})
	l.errs = make(chan error, 64)
	fail := func(err error) {
		select {
		case l.errs <- err:
		default:
		}
	}
	for w := range firebaseWorkers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for k := 0; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := l.storeAndRelease(l.c.lb(), fmt.Sprintf("fb-%d-%d", w, k)); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for n := 0; ; n++ {
			select {
			case <-l.stop:
				return
			default:
			}
			err := l.passkeyCeremony(l.auth, n)
			if errors.Is(err, errCeremonyCut) {
				l.r.retries.Add(1)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if err != nil {
				fail(err)
				return
			}
		}
	}()
	if l.portal != nil {
		l.wg.Add(1)
		go l.portal.run(fail)
	}
}

func (l *clusterLoad) finish() {
	close(l.stop)
	l.wg.Wait()
	close(l.errs)
	for err := range l.errs {
		l.t.Error(err)
	}
}

// verifyAll reads back every acknowledged write through HAProxy (Firebase)
// and by a passkey assertion on node i (passkey keys).
func (l *clusterLoad) verifyAll(t *testing.T, what string) {
	t.Helper()
	l.acked.Lock()
	fb := make(map[string][]byte, len(l.acked.firebase))
	for u, k := range l.acked.firebase {
		fb[u] = k
	}
	pk := len(l.acked.passkey)
	l.acked.Unlock()
	users := make(chan string)
	var lost atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range users {
				if err := l.release(l.c.lb(), u, fb[u]); err != nil {
					lost.Add(1)
					t.Errorf("%s: acknowledged write of %s: %v", what, u, err)
				}
			}
		}()
	}
	for u := range fb {
		users <- u
	}
	close(users)
	wg.Wait()
	t.Logf("%s: %d acknowledged Firebase stores and %d passkey registrations; %d lost; %d retried requests so far",
		what, len(fb), pk, lost.Load(), l.r.retries.Load())
}

// TestClusterScriptThreeAppliances drives scripts/cluster.sh: three
// `keywarden dev` appliances, each with its own simulated TPM and embedded
// etcd member, joined by attestation, behind HAProxy, with the Portal
// drop-in on (one stand-in for Portal's API and one real Vault dev server
// that all three use). Under mixed load (Firebase stores and releases of
// distinct users through HAProxy; passkey ceremonies that begin on one
// node's public port and finish on another's; Portal TBS writes read back
// on another node, custodian webhook backups fetched on another node, and
// PasskeyStorage logins whose spent sessionId is refused on a third node)
// one appliance is SIGKILLed: no acknowledged write is lost and the
// clients see only retried requests. While it is down the two others keep
// serving every kind of request node by node; `cluster.sh start` brings it
// back and it serves a write made while it was down from its own port.
// With two of three killed the survivor is not ready and refuses writes
// (Firebase and webhook) with 503 store_unavailable; after they are back
// nothing acknowledged is lost. Joins: an unapproved joiner never gets the key, a replayed join
// request is refused (join_replayed), and a joiner whose PCRs differ from
// the cluster's policy is refused at approval (join_policy_refused).
func TestClusterScriptThreeAppliances(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("needs the TPM simulator (cgo)")
	}
	opsNeedTool(t, "haproxy")
	opsNeedTool(t, "curl")
	bin := proc.BuildBinary(t, "./cmd/keywarden")
	c := &shCluster{root: t.TempDir(), module: proc.ModuleRoot(t), offset: freeOffset(t)}
	// cluster.sh rebuilds only when a source file is newer than its binary:
	// it uses the one this test process built.
	if err := os.MkdirAll(filepath.Join(c.root, "bin"), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.root, "bin", "keywarden"), data, 0o700); err != nil {
		t.Fatal(err)
	}
	iss := firebasetest.NewIssuer(t, "proj-cluster-sh")
	vs := vaultdev.Start(t)
	api := newPortalAPIStandIn(t)
	c.env = []string{
		"KEYWARDEN_ADMIN_KEY=" + clusterE2EAdmin,
		"KEYWARDEN_FIREBASE_PROJECT_ID=" + iss.ProjectID(),
		"KEYWARDEN_FIREBASE_CERTS_URL=" + iss.URL(),
		// One test address sends everything: lift the per-address limits.
		"KEYWARDEN_LIMITS_RATE_PER_SECOND=1000000",
		"KEYWARDEN_LIMITS_RATE_BURST=1000000",
		"KEYWARDEN_PASSKEY_MAX_CEREMONIES_PER_ADDRESS=100000",
	}
	c.env = append(c.env, clusterPortalEnv(api.srv.URL, vs.Addr(), vs.RootToken())...)
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= 3; i++ {
				t.Logf("--- node%d log (tail):\n%s", i, c.logs(i))
			}
		}
		c.run(t, "down")
	})
	c.run(t, "up")

	l := &clusterLoad{t: t, c: c, auth: softauthn.New([16]byte{'k', 'w', 'e', '2', 'e'}), iss: iss, r: &retrier{}, acked: &acked{firebase: map[string][]byte{}, passkey: map[string][]byte{}}}
	for i := 1; i <= 3; i++ {
		l.alive[i].Store(true)
	}
	l.portal = newPortalLoad(l, api)

	// Mixed load; node 2 is SIGKILLed in the middle of it. On the embedded
	// backend each appliance runs its etcd member in its own process, so
	// this one SIGKILL is both steps of "an appliance, then an etcd member":
	// node 2's member dies with it, and the cluster runs on two of its
	// three members (quorum 2) until node 2 is started again.
	l.start(4)
	time.Sleep(3 * time.Second)
	l.alive[2].Store(false)
	c.kill(t, 2)
	time.Sleep(4 * time.Second)
	l.finish()
	if t.Failed() {
		t.FailNow()
	}
	l.verifyAll(t, "after node2 was killed")
	l.portal.verify(t, "after node2 was killed")
	clusterServesWithMemberDown(t, c, l.portal, 2)

	// A write while node 2 is down; node 2 rejoins and serves it from its
	// own port.
	down := []byte("written-while-node2-was-down-0123")
	if err := l.storeWith(c.lb(), "while-node2-down", down); err != nil {
		t.Fatal(err)
	}
	c.run(t, "start", "2")
	l.alive[2].Store(true)
	if err := l.release(c.public(2), "while-node2-down", down); err != nil {
		t.Fatalf("node2 after its restart: %v", err)
	}

	// Joins refused.
	clusterJoinsRefused(t, c, bin)

	// Two of three killed: the survivor is not ready and refuses writes.
	c.kill(t, 2)
	c.kill(t, 3)
	opsEventually(t, 30*time.Second, "node1 /readyz 503 without quorum", func() (bool, string) {
		a, err := send(clusterLoadHTTP, http.MethodGet, c.public(1)+"/readyz", nil, nil)
		return err == nil && a.status == 503, fmt.Sprintf("%d %s %v", a.status, a.body, err)
	})
	// Three writes without quorum at once: a Firebase store, a Portal TBS
	// write and a webhook backup each answer 503 store_unavailable: none
	// is acknowledged. (The webhook's share write waits in the store's
	// write queue behind the readiness probes' heartbeats, each held for
	// etcd's own request timeout, or is taken into one such transaction;
	// either way it is answered at the webhook's own deadline, so Portal,
	// which waits 10 s, gets the 503, not a cut connection.)
	type noQuorum struct {
		what string
		a    answer
		err  error
		took time.Duration
	}
	results := make(chan noQuorum, 3)
	for _, w := range []struct {
		what, path, method string
		body               []byte
		hdr                map[string]string
	}{
		{"Firebase store", "/v1/firebase/key", http.MethodPut, jsonBody(map[string]string{"key": base64.StdEncoding.EncodeToString(down)}),
			map[string]string{"Authorization": "Bearer " + l.fbToken("no-quorum")}},
		{"Portal TBS write", "/v1/backup/encrypt-key", http.MethodPut, jsonBody(map[string]string{"encryptionKey": randomHex(32)}),
			sdkHeaders(clusterPortalTBSCred, "X-Firebase-Token", l.fbToken("no-quorum-tbs"))},
		{"webhook backup", "/webhook/backup", http.MethodPost,
			jsonBody(map[string]string{"clientId": "clx0noquorum", "backupMethod": clusterMethodA, "share": `{"share":"not-acknowledged"}`}),
			sdkHeaders("", "X-Webhook-Secret", clusterPortalSecret)},
	} {
		go func() {
			start := time.Now()
			a, err := send(&http.Client{Timeout: 11 * time.Second, Transport: clusterLoadHTTP.Transport}, w.method, c.public(1)+w.path, w.body, w.hdr)
			results <- noQuorum{w.what, a, err, time.Since(start).Round(time.Millisecond)}
		}()
	}
	for range 3 {
		r := <-results
		switch {
		case r.err == nil && r.a.status == 503 && opsErrorCode(r.a.body) == "store_unavailable":
			t.Logf("%s without quorum: 503 store_unavailable after %s", r.what, r.took)
		default:
			t.Errorf("%s without quorum: %d %s %v after %s, want 503 store_unavailable", r.what, r.a.status, r.a.body, r.err, r.took)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	c.run(t, "start", "2")
	c.run(t, "start", "3")
	l.verifyAll(t, "after losing and regaining quorum")
	l.portal.verify(t, "after losing and regaining quorum")
	if err := l.release(c.public(3), "while-node2-down", down); err != nil {
		t.Fatalf("node3 after its restart: %v", err)
	}
	l.verifyPasskeysAll(t)
	l.portal.verifyPasskeys(t)
	t.Logf("clients saw %d retried requests and no other failure", l.r.retries.Load())
}

// storeWith stores key for user through base.
func (l *clusterLoad) storeWith(base, user string, key []byte) error {
	auth := map[string]string{"Authorization": "Bearer " + l.fbToken(user)}
	a, err := l.r.do(http.MethodPut, base+"/v1/firebase/key", jsonBody(map[string]string{"key": base64.StdEncoding.EncodeToString(key)}), auth)
	if err != nil {
		return err
	}
	if a.status != 200 && a.status != 201 {
		return fmt.Errorf("store %s: %d %s", user, a.status, a.body)
	}
	l.acked.put(l.acked.firebase, user, key)
	return nil
}

// verifyPasskeysAll releases every acknowledged passkey user's key with a
// fresh assertion begun on one node and finished on the next.
func (l *clusterLoad) verifyPasskeysAll(t *testing.T) {
	t.Helper()
	l.acked.Lock()
	keys := make(map[string][]byte, len(l.acked.passkey))
	for u, k := range l.acked.passkey {
		keys[u] = k
	}
	l.acked.Unlock()
	if len(keys) == 0 {
		t.Fatal("no passkey ceremony completed during the load")
	}
	k := 0
	for u, want := range keys {
		k++
		begin, finish := l.c.public(k%3+1), l.c.public((k+1)%3+1)
		a, err := l.r.do(http.MethodPost, begin+"/v1/passkeys/authentication/begin", jsonBody(map[string]string{"userId": u}), nil)
		var begun struct {
			CeremonyID string          `json:"ceremonyId"`
			PublicKey  json.RawMessage `json:"publicKey"`
		}
		if err != nil || a.status != 200 || json.Unmarshal(a.body, &begun) != nil {
			t.Errorf("acknowledged passkey of %s: begin: %d %s %v", u, a.status, a.body, err)
			continue
		}
		assertion, err := l.auth.Get(begun.PublicKey, clusterOrigin)
		if err != nil {
			t.Fatal(err)
		}
		// Not retried: a finish is single use (every node answers here).
		a, err = send(clusterLoadHTTP, http.MethodPost, finish+"/v1/passkeys/authentication/finish",
			jsonBody(map[string]any{"ceremonyId": begun.CeremonyID, "credential": json.RawMessage(assertion)}), nil)
		var rel struct {
			Key string `json:"key"`
		}
		if err != nil || a.status != 200 || json.Unmarshal(a.body, &rel) != nil || rel.Key != base64.StdEncoding.EncodeToString(want) {
			t.Errorf("acknowledged passkey of %s: release begun on %s, finished on %s: %d %s %v", u, begin, finish, a.status, a.body, err)
		}
	}
	t.Logf("%d acknowledged passkey keys released, each begun on one node and finished on another", len(keys))
}

// clusterJoinsRefused: the refused joins against the running cluster.
func clusterJoinsRefused(t *testing.T, c *shCluster, bin string) {
	t.Helper()
	// An unapproved joiner: `keywarden cluster join` waits for an operator
	// who never approves; it gives up and has no root key.
	dir4 := filepath.Join(c.root, "node4")
	cmd := exec.Command(bin, "cluster", "join", "-poll", "200ms", "-timeout", "3s", c.admin(1))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARDEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "KEYWARDEN_DEV=1", "KEYWARDEN_DATA_DIR="+filepath.Join(dir4, "data"), "KEYWARDEN_CLUSTER_NAME=node4",
		fmt.Sprintf("KEYWARDEN_CLUSTER_PEER_ADVERTISE=https://127.0.0.1:%d", c.port(2380, 4)), "KEYWARDEN_TPM_SIMULATOR_SEED=7004")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("an unapproved join succeeded:\n%s", out)
	}
	if _, serr := os.Stat(filepath.Join(dir4, "data", "node", "state.json")); serr == nil {
		t.Fatalf("the unapproved joiner has cluster state:\n%s", out)
	}
	id := ""
	if f := strings.Fields(string(out)); len(f) > 0 {
		for k := range f {
			if f[k] == "request" && k+1 < len(f) {
				id = f[k+1]
				break
			}
		}
	}
	admin := map[string]string{"Authorization": "Bearer " + clusterE2EAdmin}
	if id != "" {
		a, err := send(clusterLoadHTTP, http.MethodGet, c.admin(2)+"/v1/admin/cluster/joins/"+id, nil, admin)
		if err != nil || a.status != 200 || !bytes.Contains(a.body, []byte(`"pending"`)) {
			t.Errorf("the unapproved request %s, seen from node2: %d %s %v", id, a.status, a.body, err)
		}
	} else {
		t.Errorf("no request id in the joiner's output:\n%s", out)
	}

	// A joiner whose TPM measured something else (PCR 7 extended on its
	// simulator), and its request sent twice.
	sim, err := tpmsim.Open(7005)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	d := sha256.Sum256([]byte("a boot the cluster's policy does not know"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(7), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(sim); err != nil {
		t.Fatalf("extend PCR 7: %v", err)
	}
	a, err := send(clusterLoadHTTP, http.MethodPost, c.admin(1)+"/v1/cluster/joins/nonce", nil, nil)
	var nonce join.Nonce
	if err != nil || a.status != 200 || json.Unmarshal(a.body, &nonce) != nil {
		t.Fatalf("join nonce: %d %s %v", a.status, a.body, err)
	}
	req, ak, err := join.Prepare(context.Background(), sim, &nonce, "node5", []string{fmt.Sprintf("https://127.0.0.1:%d", c.port(2380, 5))})
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	body := jsonBody(req)
	a, err = send(clusterLoadHTTP, http.MethodPost, c.admin(1)+"/v1/cluster/joins", body, nil)
	var sub join.Submitted
	if err != nil || a.status != 202 || json.Unmarshal(a.body, &sub) != nil {
		t.Fatalf("join request: %d %s %v", a.status, a.body, err)
	}
	// Replayed, to the same member and to another.
	for _, i := range []int{1, 3} {
		a, err = send(clusterLoadHTTP, http.MethodPost, c.admin(i)+"/v1/cluster/joins", body, nil)
		if err != nil || a.status != 409 || opsErrorCode(a.body) != "join_replayed" {
			t.Errorf("join request replayed to node%d: %d %s %v, want 409 join_replayed", i, a.status, a.body, err)
		}
	}
	a, err = send(clusterLoadHTTP, http.MethodPost, c.admin(2)+"/v1/admin/cluster/joins/"+sub.ID+"/approve", nil, admin)
	if err != nil || a.status != 403 || opsErrorCode(a.body) != "join_policy_refused" {
		t.Errorf("approving a joiner with another PCR 7: %d %s %v, want 403 join_policy_refused", a.status, a.body, err)
	}
	// It gets nothing, and the cluster still has its three members.
	a, err = send(clusterLoadHTTP, http.MethodGet, c.admin(1)+"/v1/cluster/joins/"+sub.ID, nil, map[string]string{"Authorization": "Bearer " + sub.PollSecret})
	if err != nil || a.status != 200 || !bytes.Contains(a.body, []byte(`"refused"`)) || bytes.Contains(a.body, []byte(`"answer"`)) {
		t.Errorf("the refused joiner's poll: %d %s %v", a.status, a.body, err)
	}
	a, err = send(clusterLoadHTTP, http.MethodGet, c.admin(1)+"/v1/admin/cluster", nil, admin)
	var st struct {
		Members []json.RawMessage `json:"members"`
	}
	if err != nil || a.status != 200 || json.Unmarshal(a.body, &st) != nil || len(st.Members) != 3 {
		t.Errorf("members after the refused joins: %d %s %v", a.status, a.body, err)
	}
}

// clusterServesWithMemberDown: with node down SIGKILLed (its appliance and
// its etcd member), the cluster still lists it as a member (nobody removed
// it) and has a leader; the two others are ready and serve, node by node,
// a Portal TBS write read back on the other one, webhook backups fetched
// on the other one, and a passkey registration begun on one and finished
// on the other.
func clusterServesWithMemberDown(t *testing.T, c *shCluster, p *portalLoad, down int) {
	t.Helper()
	var up []int
	for i := 1; i <= 3; i++ {
		if i != down {
			up = append(up, i)
		}
	}
	for _, i := range up {
		a, err := send(clusterLoadHTTP, http.MethodGet, c.public(i)+"/readyz", nil, nil)
		if err != nil || a.status != 200 {
			t.Fatalf("node%d /readyz with node%d's member down: %d %s %v", i, down, a.status, a.body, err)
		}
	}
	a, err := send(clusterLoadHTTP, http.MethodGet, c.admin(up[0])+"/v1/admin/cluster", nil, map[string]string{"Authorization": "Bearer " + clusterE2EAdmin})
	var st struct {
		Leader  string `json:"leader"` // hexadecimal member id, "0" when none is known
		Members []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	if err != nil || a.status != 200 || json.Unmarshal(a.body, &st) != nil {
		t.Fatalf("cluster status with node%d down: %d %s %v", down, a.status, a.body, err)
	}
	names := ""
	for _, m := range st.Members {
		names += m.Name + " "
	}
	if len(st.Members) != 3 || !strings.Contains(names, fmt.Sprintf("node%d ", down)) || st.Leader == "0" || st.Leader == "" {
		t.Fatalf("cluster status with node%d down: %s (want three members, node%d still one, and a leader)", down, a.body, down)
	}
	// One round of each kind, alternating the two live nodes; none may be
	// cut (nothing is being killed now).
	there := []int{up[0], up[1], up[0]}
	back := []int{up[1], up[0], up[1]}
	if err := p.tbsRound(1, there); err != nil {
		t.Fatalf("Portal TBS with node%d down (written on node%d, read on node%d): %v", down, there[0], there[1], err)
	}
	if err := p.webhookRound(1, back); err != nil {
		t.Fatalf("webhooks with node%d down (node%d, node%d, fetched on node%d): %v", down, back[0], back[1], back[2], err)
	}
	if err := p.passkeyRound(there); err != nil {
		t.Fatalf("Portal passkeys with node%d down (begun on node%d, finished on node%d): %v", down, there[0], there[1], err)
	}
}
