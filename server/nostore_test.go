package server

import (
	"context"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/enclave"
)

// TestAdminAnswersNoStore: the admin answers carry secrets (backups,
// session tokens) or what identifies users; no cache on the way (a proxy
// in front of the admin listener, a browser used by an operator) may keep
// them. Error answers too: a cache does not know which ones are harmless.
func TestAdminAnswersNoStore(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	owner := enclave.UserOwner("alice")
	for _, k := range []string{"0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"} {
		if _, err := h.custody.PutKey(ctx, owner, "PASSKEY", []byte(k), enclave.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		method, path string
		body         any
		status       int
	}{
		{"GET", "/v1/admin/backup", nil, 200},
		{"GET", "/v1/admin/users/alice", nil, 200},
		{"GET", "/v1/admin/users/alice/keys/PASSKEY/versions", nil, 200},
		{"POST", "/v1/admin/users/alice/session-tokens", map[string]string{"ttl": "5m"}, 201},
		{"GET", "/v1/admin/firebase/blocked", nil, 200},
		{"GET", "/v1/admin/users/nobody", nil, 404},
		{"GET", "/v1/admin/owners/user%3Aalice", nil, 200},
		{"GET", "/v1/admin/owners/user%3Aalice/keys/PASSKEY/versions", nil, 200},
		{"GET", "/v1/admin/owners/nobody", nil, 400},
	}
	for _, tc := range cases {
		r := h.Admin(tc.method, tc.path, tc.body)
		if r.Status != tc.status {
			t.Fatalf("%s %s = %d %s", tc.method, tc.path, r.Status, r.Body)
		}
		if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
			t.Errorf("%s %s: Cache-Control %q, want no-store", tc.method, tc.path, cc)
		}
	}
	// Refused without the admin key: still not cacheable.
	if r := h.Do("GET", "/v1/admin/backup", nil); r.Status != 401 || !strings.Contains(r.Header.Get("Cache-Control"), "no-store") {
		t.Errorf("unauthenticated backup: %d, Cache-Control %q", r.Status, r.Header.Get("Cache-Control"))
	}
}
