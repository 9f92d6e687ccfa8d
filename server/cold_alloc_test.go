package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

// maxColdReleaseAllocs bounds the allocations of a whole cold Firebase
// release in process (a never-seen token of a user whose key is stored):
// middleware, token verification, record read and open, audit line,
// receipt, answer. The garbage is a fifth of a cold release's CPU
// (docs/BENCHMARKS.md, issue 19).
const maxColdReleaseAllocs = 165

func TestColdReleaseAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations of its own")
	}
	h := newHarnessOn(t, []apptest.CoreOption{apptest.Receipts()})
	const runs = 50
	body, _ := json.Marshal(keyRequest{Key: b64([]byte("0123456789abcdef0123456789abcdef"))})
	read := make([]string, runs+1)
	for i := range read {
		sub := fmt.Sprintf("alloc-%03d", i)
		put := h.issuer.Mint(firebasetest.Claims{"sub": sub, "user_id": sub, "iat": h.issuer.Clock().Now().Unix() - 1})
		read[i] = h.issuer.Mint(firebasetest.Claims{"sub": sub, "user_id": sub})
		req := httptest.NewRequest(http.MethodPut, "/v1/firebase/key", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+put)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.srv.Public.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			t.Fatalf("put: %d %s", rec.Code, rec.Body)
		}
	}
	i := 0
	n := testing.AllocsPerRun(runs, func() {
		req := httptest.NewRequest(http.MethodGet, "/v1/firebase/key", nil)
		req.Header.Set("Authorization", "Bearer "+read[i])
		i++
		rec := httptest.NewRecorder()
		h.srv.Public.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Header().Get("Keywarden-Receipt") == "" {
			t.Fatalf("release: %d %s", rec.Code, rec.Body)
		}
	})
	t.Logf("%.0f allocations per cold release", n)
	if n > maxColdReleaseAllocs {
		t.Errorf("a cold release costs %.0f allocations, want at most %d", n, maxColdReleaseAllocs)
	}
}
