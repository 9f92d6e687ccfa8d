package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// portalAPIStandIn is a stand-in for Portal's API in its wire format:
// GET /api/v3/clients/me with Authorization: Bearer <client credential>
// answers the client's description (the fields PortalSwift's
// ClientResponse decodes). It counts calls per credential and can fail
// with a 5xx or stop listening, as Portal's API might.
type portalAPIStandIn struct {
	srv *httptest.Server

	mu      sync.Mutex
	clients map[string][2]string // credential → {client id, custodian id}
	calls   map[string]int
	failing int // when not 0, every call answers this status
	total   atomic.Int64
}

func newPortalAPIStandIn(t *testing.T) *portalAPIStandIn {
	t.Helper()
	p := &portalAPIStandIn{clients: map[string][2]string{}, calls: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *portalAPIStandIn) serve(w http.ResponseWriter, r *http.Request) {
	p.total.Add(1)
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	p.calls[tok]++
	c, known := p.clients[tok]
	failing := p.failing
	p.mu.Unlock()
	switch {
	case r.URL.Path != "/api/v3/clients/me" || r.Method != http.MethodGet:
		http.NotFound(w, r)
	case failing != 0:
		http.Error(w, `{"error":"upstream trouble"}`, failing)
	case !known:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"Unauthorized"}`))
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id":                  c[0],
			"custodian":           map[string]any{"id": c[1], "name": "Acme Wallets"},
			"createdAt":           "2026-01-02T03:04:05.000Z",
			"environment":         map[string]any{"id": "env-prod", "name": "Production", "backupWithPortalEnabled": false},
			"ejectedAt":           nil,
			"isAccountAbstracted": false,
			"metadata":            map[string]any{"namespaces": map[string]any{"eip155": map[string]any{"address": "0x0000000000000000000000000000000000000001"}}},
			"wallets":             []any{},
		})
	}
}

func (p *portalAPIStandIn) add(cred, clientID, custodianID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[cred] = [2]string{clientID, custodianID}
}

func (p *portalAPIStandIn) callsFor(cred string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[cred]
}

func (p *portalAPIStandIn) fail(status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failing = status
}

// portalNode is a running `keywarden dev` with the Portal drop-in.
type portalNode struct{ *proc.Node }

// startPortalNode runs `keywarden dev` with env (KEYWARDEN_… settings) on
// free loopback ports (public and admin apart) and waits until /readyz
// answers 200.
func startPortalNode(t *testing.T, bin string, env ...string) *portalNode {
	t.Helper()
	n := proc.StartNode(t, bin, proc.NodeOptions{Name: "keywarden", AdminAddr: proc.FreeAddr(t), Env: append([]string{
		"KEYWARDEN_ADMIN_KEY=portal-e2e-admin-key-0123456789",
		"KEYWARDEN_LIMITS_RATE_PER_SECOND=2000",
		"KEYWARDEN_LIMITS_RATE_BURST=2000",
		"KEYWARDEN_LOG_LEVEL=debug",
	}, env...)})
	n.WaitReady(t, "/readyz")
	return &portalNode{n}
}

var portalHTTP = &http.Client{Timeout: 30 * time.Second}

// portalReply is an answer.
type portalReply struct {
	status int
	header http.Header
	body   []byte
}

func (r portalReply) code() string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func (r portalReply) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// sdk sends a request exactly as the SDKs do: Accept and Content-Type
// application/json, X-Portal-Trace-Id, Authorization: Bearer <client
// credential> when given, the body as JSON (a string body is sent as is),
// and extra header pairs.
func (n *portalNode) sdk(t *testing.T, method, path, cred string, body any, headers ...string) portalReply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, n.URL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Portal-Trace-Id", fmt.Sprintf("e2e-%d", time.Now().UnixNano()))
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := portalHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return portalReply{resp.StatusCode, resp.Header, b}
}

// portalMembers asserts that body holds every member in spec, by dotted
// path ("options.publicKey.rp.id"; "a.b[]" is each element of array a.b),
// with its JSON type: "string", "int", "bool", "object", "array".
func portalMembers(t *testing.T, body []byte, spec map[string]string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("answer is not JSON: %s", body)
	}
	for path, kind := range spec {
		for _, got := range portalLookup(v, strings.Split(path, ".")) {
			if got.err != "" {
				t.Fatalf("%s: %s in %s", path, got.err, body)
			}
			if !portalKind(got.v, kind) {
				t.Fatalf("%s is %T, want %s, in %s", path, got.v, kind, body)
			}
		}
	}
}

type portalFound struct {
	v   any
	err string
}

func portalLookup(v any, path []string) []portalFound {
	if len(path) == 0 {
		return []portalFound{{v: v}}
	}
	name, each := strings.CutSuffix(path[0], "[]")
	m, ok := v.(map[string]any)
	if !ok {
		return []portalFound{{err: "parent is not an object"}}
	}
	child, ok := m[name]
	if !ok {
		return []portalFound{{err: "missing"}}
	}
	if !each {
		return portalLookup(child, path[1:])
	}
	arr, ok := child.([]any)
	if !ok {
		return []portalFound{{err: "not an array"}}
	}
	var out []portalFound
	for _, el := range arr {
		out = append(out, portalLookup(el, path[1:])...)
	}
	return out
}

func portalKind(v any, kind string) bool {
	switch kind {
	case "string":
		_, ok := v.(string)
		return ok
	case "int":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "bool":
		_, ok := v.(bool)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	}
	return false
}

// portalStrict decodes body into v refusing unknown members.
func portalStrict(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("strict decode into %T: %v: %s", v, err, body)
	}
}

// portalNoSecret fails if the answer holds any of the secrets.
func portalNoSecret(t *testing.T, r portalReply, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && bytes.Contains(r.body, []byte(s)) {
			t.Fatalf("the answer holds a secret: %s", r)
		}
	}
}

// portalWant fails unless r has status (and code, when given).
func portalWant(t *testing.T, r portalReply, status int, code string) {
	t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		t.Fatalf("got %s, want %d %s", r, status, code)
	}
}
