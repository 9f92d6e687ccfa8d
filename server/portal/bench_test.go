package portal

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The TBS read path (Portal credential cached, Firebase token verified,
// key released with a durable audit line) beside the native Firebase
// release, both in process through the server's echo handler: the
// difference is the adapter's cost (credential check, cache hit, one
// extra store read for the client check).
//
//	go test ./server/portal/ -run '^$' -bench . -benchmem

func benchHarness(b *testing.B) (*harness, string) {
	b.Helper()
	h := newHarness(b, harnessOptions{})
	h.clients()
	tok := h.issuer.Mint(nil)
	if r := h.tbs(http.MethodPut, credA, tok, map[string]string{"encryptionKey": keyHex1}); r.Status != http.StatusCreated {
		b.Fatalf("store: %d %s", r.Status, r.Body)
	}
	return h, tok
}

func serve(b *testing.B, h *harness, req *http.Request) {
	rec := httptest.NewRecorder()
	h.srv.Public.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func BenchmarkTBSRead(b *testing.B) {
	h, tok := benchHarness(b)
	mk := func() *http.Request {
		req := httptest.NewRequest(http.MethodGet, "/v1/backup/encrypt-key", nil)
		req.Header.Set("Authorization", "Bearer "+credA)
		req.Header.Set(FirebaseTokenHeader, tok)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Portal-Trace-Id", "bench")
		return req
	}
	serve(b, h, mk()) // the credential is cached from here on
	calls := h.api.calls.Load()
	b.ReportAllocs()
	for b.Loop() {
		serve(b, h, mk())
	}
	if h.api.calls.Load() != calls {
		b.Fatal("a cached read called Portal")
	}
}

func BenchmarkNativeFirebaseRead(b *testing.B) {
	h, tok := benchHarness(b)
	mk := func() *http.Request {
		req := httptest.NewRequest(http.MethodGet, "/v1/firebase/key", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return req
	}
	serve(b, h, mk())
	b.ReportAllocs()
	for b.Loop() {
		serve(b, h, mk())
	}
}

// BenchmarkResolveCached is the identity cache hit alone.
func BenchmarkResolveCached(b *testing.B) {
	h, _ := benchHarness(b)
	r := h.adapter.Resolver()
	if _, err := r.Resolve(b.Context(), credA, "192.0.2.1", ""); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(b.Context(), credA, "192.0.2.1", ""); err != nil {
			b.Fatal(err)
		}
	}
}
