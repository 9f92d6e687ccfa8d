package e2e

// Portal's three wire protocols in the mixed load of
// TestClusterScriptThreeAppliances: TBS (the SDK's FirebaseStorage), the
// custodian webhooks (Vault Transit underneath, one real Vault dev server
// that every node uses, as a customer's nodes share their Vault) and
// PasskeyStorage. Every step crosses nodes: what one node acknowledged is
// read on another, a sessionId begun on one node is finished on a second
// and refused on a third. Requests are built as the SDKs send them
// (portal_sdk_test.go); these helpers return errors instead of failing the
// test because they run in the load's goroutines.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keywarden/keywarden/internal/softauthn"
)

const (
	clusterPortalCustodian = "cust-cluster-e2e"
	clusterPortalSecret    = "cluster-e2e-webhook-secret-0123456789"
	// The TBS load's Portal client: every TBS user is stored through it
	// (portal.client_mismatch refuse binds the user to it).
	clusterPortalTBSCred   = "pk_cluster_tbs_client"
	clusterPortalTBSClient = "clx0clustertbs0000000001"
	// The relying party Portal's PasskeyStorage names: dev mode's rp_id.
	clusterPortalRP = "localhost"
	// The two backup methods each webhook client gets, in fetch order.
	clusterMethodA = "GDRIVE-ED25519"
	clusterMethodB = "PASSKEY-SECP256K1"
)

// clusterPortalEnv is what every node needs for the Portal drop-in.
func clusterPortalEnv(apiURL, vaultAddr, vaultToken string) []string {
	return []string{
		"KEYWARDEN_PORTAL_API_URL=" + apiURL,
		"KEYWARDEN_PORTAL_CUSTODIAN_ID=" + clusterPortalCustodian,
		"KEYWARDEN_PORTAL_WEBHOOK_SECRET=" + clusterPortalSecret,
		"KEYWARDEN_VAULT_ADDR=" + vaultAddr,
		"KEYWARDEN_VAULT_TOKEN=" + vaultToken,
	}
}

// portalLoad is the Portal part of the load and what it had acknowledged.
type portalLoad struct {
	l    *clusterLoad
	api  *portalAPIStandIn
	auth *softauthn.Authenticator // the Portal clients' passkeys

	mu       sync.Mutex
	tbs      map[string]string    // Firebase user → encryptionKey stored through TBS
	shares   map[string][2]string // webhook client id → share of clusterMethodA, clusterMethodB ("" until acknowledged)
	passkeys map[string]string    // Portal credential → encryptionKey stored by finish-registration

	rounds   atomic.Int64 // complete Portal rounds
	replayed atomic.Int64 // sessionIds replayed on a third node and refused
}

func newPortalLoad(l *clusterLoad, api *portalAPIStandIn) *portalLoad {
	api.add(clusterPortalTBSCred, clusterPortalTBSClient, clusterPortalCustodian)
	return &portalLoad{l: l, api: api, auth: softauthn.New([16]byte{'k', 'w', 'p', 'o', 'r', 't', 'a', 'l'}),
		tbs: map[string]string{}, shares: map[string][2]string{}, passkeys: map[string]string{}}
}

// sdkHeaders are the headers Portal's SDKs send (cred: the client
// credential, when the route takes one) plus extra pairs.
func sdkHeaders(cred string, extra ...string) map[string]string {
	h := map[string]string{"Accept": "application/json", "X-Portal-Trace-Id": fmt.Sprintf("cluster-e2e-%d", traceSeq.Add(1))}
	if cred != "" {
		h["Authorization"] = "Bearer " + cred
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

var traceSeq atomic.Int64

// sendOnce sends one request to one node: a connection error or a 502/503/504
// (the node is being killed) cuts the round (errCeremonyCut, counted as a
// retry by the caller); any other status than want is an error.
func sendOnce(method, url string, body any, hdr map[string]string, what string, want ...int) (answer, error) {
	var b []byte
	if body != nil {
		b = jsonBody(body)
	}
	x, err := send(clusterLoadHTTP, method, url, b, hdr)
	if err != nil || x.status == 502 || x.status == 503 || x.status == 504 {
		return x, errCeremonyCut
	}
	if !slices.Contains(want, x.status) {
		return x, fmt.Errorf("%s: %d %s", what, x.status, x.body)
	}
	return x, nil
}

// viaLB sends through HAProxy, retried until an answer that is not a
// connection error or 502/503/504 (the retrier); then as sendOnce.
func (p *portalLoad) viaLB(method, path string, body any, hdr map[string]string, what string, want ...int) (answer, error) {
	var b []byte
	if body != nil {
		b = jsonBody(body)
	}
	x, err := p.l.r.do(method, p.l.c.lb()+path, b, hdr)
	if err != nil {
		return x, fmt.Errorf("%s through HAProxy: %w", what, err)
	}
	if !slices.Contains(want, x.status) {
		return x, fmt.Errorf("%s through HAProxy: %d %s", what, x.status, x.body)
	}
	return x, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// round is one Portal round across the live nodes a, b, c (from pick(n)):
// TBS, webhooks and, every third round, a PasskeyStorage registration and
// login. Even rounds write through HAProxy and read on a node; odd rounds
// write on a and read on b.
func (p *portalLoad) round(n int) error {
	nodes := p.l.pick(n)
	if len(nodes) == 0 {
		return errCeremonyCut
	}
	if err := p.tbsRound(n, nodes); err != nil {
		return err
	}
	if err := p.webhookRound(n, nodes); err != nil {
		return err
	}
	if n%3 == 0 {
		if err := p.passkeyRound(nodes); err != nil {
			return err
		}
	}
	p.rounds.Add(1)
	return nil
}

// tbsRound: PUT /v1/backup/encrypt-key for a new Firebase user, then GET
// on another node returns what was written.
func (p *portalLoad) tbsRound(n int, nodes []int) error {
	user := fmt.Sprintf("ptbs-%d", p.l.seq.Add(1))
	key := randomHex(32) // 64 hex characters, as the SDK's key
	hdr := sdkHeaders(clusterPortalTBSCred, "X-Firebase-Token", p.l.fbToken(user))
	put := map[string]string{"encryptionKey": key}
	var err error
	if n%2 == 0 {
		_, err = p.viaLB(http.MethodPut, "/v1/backup/encrypt-key", put, hdr, "TBS write of "+user, 200, 201)
	} else {
		_, err = sendOnce(http.MethodPut, p.l.c.public(nodes[0])+"/v1/backup/encrypt-key", put, hdr, "TBS write of "+user+" on "+p.l.c.public(nodes[0]), 200, 201)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.tbs[user] = key
	p.mu.Unlock()
	x, err := sendOnce(http.MethodGet, p.l.c.public(nodes[1])+"/v1/backup/encrypt-key", nil, hdr, "TBS read of "+user+" on "+p.l.c.public(nodes[1]), 200)
	if err != nil {
		return err
	}
	var got sdkEncryptKey
	if err := json.Unmarshal(x.body, &got); err != nil || got.EncryptionKey != key {
		return fmt.Errorf("TBS read of %s on %s right after the write: another key than the one written (%v)", user, p.l.c.public(nodes[1]), err)
	}
	return nil
}

// webhookRound: Portal's /webhook/backup of two shares of a new client
// (the first through HAProxy or node a, the second on node b), then
// /webhook/backup/fetch on node c returns both, as Portal checks right
// after a backup.
func (p *portalLoad) webhookRound(n int, nodes []int) error {
	client := fmt.Sprintf("clx0clwh%07d", p.l.seq.Add(1))
	shareA := fmt.Sprintf(`{"backupSharePairId":"bsp-%s-a","share":"%s","curve":"ED25519"}`, client, randomHex(16))
	shareB := fmt.Sprintf(`{"backupSharePairId":"bsp-%s-b","share":"%s","curve":"SECP256K1"}`, client, randomHex(16))
	hdr := sdkHeaders("", "X-Webhook-Secret", clusterPortalSecret)
	backup := func(base, method, share string) error {
		body := map[string]string{"clientId": client, "backupMethod": method, "share": share}
		var err error
		if base == "" {
			_, err = p.viaLB(http.MethodPost, "/webhook/backup", body, hdr, "webhook backup "+client+" "+method, 200, 204)
		} else {
			_, err = sendOnce(http.MethodPost, base+"/webhook/backup", body, hdr, "webhook backup "+client+" "+method+" on "+base, 200, 204)
		}
		if err != nil {
			return err
		}
		p.mu.Lock()
		s := p.shares[client]
		if method == clusterMethodA {
			s[0] = share
		} else {
			s[1] = share
		}
		p.shares[client] = s
		p.mu.Unlock()
		return nil
	}
	first := p.l.c.public(nodes[0])
	if n%2 == 0 {
		first = ""
	}
	if err := backup(first, clusterMethodA, shareA); err != nil {
		return err
	}
	if err := backup(p.l.c.public(nodes[1]), clusterMethodB, shareB); err != nil {
		return err
	}
	x, err := sendOnce(http.MethodPost, p.l.c.public(nodes[2])+"/webhook/backup/fetch", map[string]string{"clientId": client}, hdr, "webhook fetch "+client+" on "+p.l.c.public(nodes[2]), 200)
	if err != nil {
		return err
	}
	var f sdkBackupShares
	if err := json.Unmarshal(x.body, &f); err != nil || !slices.Equal(f.BackupShares, []string{shareA, shareB}) {
		return fmt.Errorf("webhook fetch of %s on %s right after the backups: %d shares, not the two written (%v)", client, p.l.c.public(nodes[2]), len(f.BackupShares), err)
	}
	return nil
}

// passkeyRound: a new Portal client registers a passkey (begin on a,
// finish with its key on b), logs in (begin on b, finish-login/read on c),
// and the spent sessionId is refused on a (400 ceremony_unknown): single
// use anywhere.
func (p *portalLoad) passkeyRound(nodes []int) error {
	k := p.l.seq.Add(1)
	cred, client := fmt.Sprintf("pk_cluster_pk_%d", k), fmt.Sprintf("clx0clpk%07d", k)
	p.api.add(cred, client, clusterPortalCustodian)
	a, b, c := p.l.c.public(nodes[0]), p.l.c.public(nodes[1]), p.l.c.public(nodes[2])
	key := randomHex(32)
	rp := map[string]string{"relyingParty": clusterPortalRP}
	x, err := sendOnce(http.MethodPost, a+"/passkeys/begin-registration", rp, sdkHeaders(cred), "begin-registration on "+a, 200)
	if err != nil {
		return err
	}
	opts, sid, err := optionsOf(x.body)
	if err != nil {
		return err
	}
	raw, _, err := p.auth.CreateWith(opts, clusterOrigin, softauthn.CreateOptions{UserIDPlain: true})
	if err != nil {
		return err
	}
	att, err := iosCredentialOf(raw, "attestationObject", "clientDataJSON")
	if err != nil {
		return err
	}
	if _, err := sendOnce(http.MethodPost, b+"/passkeys/finish-registration",
		map[string]string{"attestation": att, "sessionId": sid, "encryptionKey": key, "relyingParty": clusterPortalRP},
		sdkHeaders(cred), "finish-registration on "+b+" (begun on "+a+")", 200); err != nil {
		return err
	}
	p.mu.Lock()
	p.passkeys[cred] = key
	p.mu.Unlock()
	got, replay, err := p.login(cred, b, c)
	if err != nil {
		return err
	}
	if got != key {
		return fmt.Errorf("Portal passkey login of %s begun on %s, read on %s: another key than the one registered", client, b, c)
	}
	// The spent sessionId on a third node (a is c when one node is down).
	x, err = send(clusterLoadHTTP, http.MethodPost, a+"/passkeys/finish-login/read", jsonBody(replay), sdkHeaders(cred))
	switch {
	case err != nil || x.status == 502 || x.status == 503 || x.status == 504:
		// Node a went down meanwhile: nothing to learn from it.
	case x.status != 400 || opsErrorCode(x.body) != "ceremony_unknown":
		return fmt.Errorf("SECURITY: a spent Portal sessionId replayed on %s (used on %s): %d %s, want 400 ceremony_unknown", a, c, x.status, x.body)
	default:
		p.replayed.Add(1)
	}
	return nil
}

// login runs begin-login on begin and finish-login/read on finish, and
// returns the key and the finish request (to replay).
func (p *portalLoad) login(cred, begin, finish string) (string, map[string]string, error) {
	x, err := sendOnce(http.MethodPost, begin+"/passkeys/begin-login", map[string]string{"relyingParty": clusterPortalRP}, sdkHeaders(cred), "begin-login on "+begin, 200)
	if err != nil {
		return "", nil, err
	}
	opts, sid, err := optionsOf(x.body)
	if err != nil {
		return "", nil, err
	}
	raw, err := p.auth.GetWith(opts, clusterOrigin, softauthn.GetOptions{UserHandle: softauthn.UserHandlePlain})
	if err != nil {
		return "", nil, err
	}
	assertion, err := iosCredentialOf(raw, "clientDataJSON", "authenticatorData", "signature", "userHandle")
	if err != nil {
		return "", nil, err
	}
	req := map[string]string{"assertion": assertion, "sessionId": sid, "relyingParty": clusterPortalRP}
	x, err = sendOnce(http.MethodPost, finish+"/passkeys/finish-login/read", req, sdkHeaders(cred), "finish-login/read on "+finish+" (begun on "+begin+")", 200)
	if err != nil {
		return "", nil, err
	}
	var k sdkEncryptKey
	if err := json.Unmarshal(x.body, &k); err != nil {
		return "", nil, err
	}
	return k.EncryptionKey, req, nil
}

// optionsOf returns the options member (what the SDK hands the platform)
// and the sessionId of a begin answer.
func optionsOf(body []byte) ([]byte, string, error) {
	var o struct {
		Options   json.RawMessage `json:"options"`
		SessionID string          `json:"sessionId"`
	}
	if err := json.Unmarshal(body, &o); err != nil || len(o.Options) == 0 || o.SessionID == "" {
		return nil, "", fmt.Errorf("begin answer without options or sessionId: %s", body)
	}
	return o.Options, o.SessionID, nil
}

// run is the Portal worker of the load: rounds until stop; a cut round
// (a node killed under it) counts as a retry and the next one starts.
func (p *portalLoad) run(fail func(error)) {
	defer p.l.wg.Done()
	for n := 0; ; n++ {
		select {
		case <-p.l.stop:
			return
		default:
		}
		err := p.round(n)
		if errors.Is(err, errCeremonyCut) {
			p.l.r.retries.Add(1)
			continue
		}
		if err != nil {
			fail(err)
			return
		}
	}
}

// verify reads back, through HAProxy, every TBS key and every webhook
// share the load had acknowledged.
func (p *portalLoad) verify(t *testing.T, what string) {
	t.Helper()
	p.mu.Lock()
	tbs := make(map[string]string, len(p.tbs))
	for u, k := range p.tbs {
		tbs[u] = k
	}
	shares := make(map[string][2]string, len(p.shares))
	for c, s := range p.shares {
		shares[c] = s
	}
	pk := len(p.passkeys)
	p.mu.Unlock()
	if len(tbs) == 0 || len(shares) == 0 {
		t.Fatalf("%s: the Portal load acknowledged %d TBS writes and %d webhook backups: it did not run", what, len(tbs), len(shares))
	}
	var lost atomic.Int64
	jobs := make(chan func() error)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if err := job(); err != nil {
					lost.Add(1)
					t.Errorf("%s: %v", what, err)
				}
			}
		}()
	}
	for user, key := range tbs {
		jobs <- func() error {
			x, err := p.viaLB(http.MethodGet, "/v1/backup/encrypt-key", nil, sdkHeaders(clusterPortalTBSCred, "X-Firebase-Token", p.l.fbToken(user)), "acknowledged TBS key of "+user, 200)
			if err != nil {
				return err
			}
			var k sdkEncryptKey
			if json.Unmarshal(x.body, &k) != nil || k.EncryptionKey != key {
				return fmt.Errorf("acknowledged TBS key of %s: another key", user)
			}
			return nil
		}
	}
	for client, s := range shares {
		jobs <- func() error {
			x, err := p.viaLB(http.MethodPost, "/webhook/backup/fetch", map[string]string{"clientId": client}, sdkHeaders("", "X-Webhook-Secret", clusterPortalSecret), "acknowledged shares of "+client, 200)
			if err != nil {
				return err
			}
			var f sdkBackupShares
			if err := json.Unmarshal(x.body, &f); err != nil {
				return err
			}
			for _, want := range s {
				if want != "" && !slices.Contains(f.BackupShares, want) {
					return fmt.Errorf("an acknowledged share of %s is missing (%d shares fetched)", client, len(f.BackupShares))
				}
			}
			return nil
		}
	}
	close(jobs)
	wg.Wait()
	t.Logf("%s: Portal: %d acknowledged TBS writes, %d clients' webhook backups, %d PasskeyStorage registrations; %d lost; %d rounds, %d spent sessionIds refused on a third node",
		what, len(tbs), len(shares), pk, lost.Load(), p.rounds.Load(), p.replayed.Load())
}

// verifyPasskeys logs in every acknowledged PasskeyStorage client, begun
// on one node and read on the next: each gets the key it registered.
func (p *portalLoad) verifyPasskeys(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	keys := make(map[string]string, len(p.passkeys))
	for c, k := range p.passkeys {
		keys[c] = k
	}
	p.mu.Unlock()
	if len(keys) == 0 {
		t.Fatal("no Portal passkey registration completed during the load")
	}
	if p.replayed.Load() == 0 {
		t.Fatal("no spent Portal sessionId was replayed on a third node during the load")
	}
	k := 0
	for cred, want := range keys {
		k++
		begin, finish := p.l.c.public(k%3+1), p.l.c.public((k+1)%3+1)
		got, _, err := p.login(cred, begin, finish)
		if err != nil || got != want {
			t.Errorf("acknowledged Portal passkey key of %s: login begun on %s, read on %s: %v", strings.TrimPrefix(cred, "pk_cluster_pk_"), begin, finish, err)
		}
	}
	t.Logf("%d acknowledged Portal passkey keys read, each login begun on one node and finished on another", len(keys))
}
