package clientshares

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
)

// A cipherText as an app would send it (opaque to Keywarden).
const ct1 = "U2FsdGVkX1+client-share-one/AES-GCM==" + "first"
const ct2 = "U2FsdGVkX1+client-share-two/AES-GCM==" + "second"

type shareBody struct {
	Method          string    `json:"method"`
	CipherText      string    `json:"cipherText"`
	Stored          bool      `json:"stored"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
	StatusUpdatedAt time.Time `json:"statusUpdatedAt"`
	Version         uint64    `json:"version"`
}

func TestCRUDStatusAndVersions(t *testing.T) {
	v := newEnv(t)
	p := sharePath("alice", "GDRIVE")

	want(t, v.Admin("GET", p, nil), 404, "not_found")
	r := v.Admin("PUT", p, map[string]any{"cipherText": ct1})
	want(t, r, http.StatusCreated, "")
	var info shareBody
	r.Decode(t, &info)
	if info.Stored || info.Method != "GDRIVE" || info.CipherText != "" || info.Version != 1 {
		t.Fatalf("PUT answered %s", r.Body)
	}

	var got shareBody
	r = v.Admin("GET", p, nil)
	want(t, r, 200, "")
	r.Decode(t, &got)
	if got.CipherText != ct1 || got.Stored {
		t.Fatalf("GET answered %s", r.Body)
	}

	// The app confirms it kept the backup.
	v.now = v.now.Add(time.Minute)
	r = v.Admin("PUT", p+"/status", map[string]any{"stored": true})
	want(t, r, 200, "")
	v.Admin("GET", p, nil).Decode(t, &got)
	if !got.Stored || got.CipherText != ct1 || !got.StatusUpdatedAt.Equal(v.now) || !got.UpdatedAt.Equal(v.now.Add(-time.Minute)) {
		t.Fatalf("after status: %+v", got)
	}

	// Overwrite: 200, unconfirmed again, the old value kept as a version.
	v.now = v.now.Add(time.Minute)
	r = v.Admin("PUT", p, map[string]any{"cipherText": ct2})
	want(t, r, http.StatusOK, "")
	v.Admin("GET", p, nil).Decode(t, &got)
	if got.CipherText != ct2 || got.Stored || got.Version != 2 || !got.CreatedAt.Equal(v.now.Add(-2*time.Minute)) {
		t.Fatalf("after overwrite: %+v", got)
	}
	var vs struct {
		Versions []VersionInfo `json:"versions"`
	}
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	if len(vs.Versions) != 1 || !vs.Versions[0].Stored || !vs.Versions[0].ReplacedAt.Equal(v.now) {
		t.Fatalf("versions: %+v", vs)
	}

	// Restore: the old value (and its status) is current again, the
	// replaced one becomes a version.
	v.now = v.now.Add(time.Minute)
	want(t, v.Admin("POST", p+"/versions/"+vs.Versions[0].ID+"/restore", nil), 200, "")
	v.Admin("GET", p, nil).Decode(t, &got)
	if got.CipherText != ct1 || !got.Stored || got.Version != 3 {
		t.Fatalf("after restore: %+v", got)
	}
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	if len(vs.Versions) != 1 || vs.Versions[0].Stored {
		t.Fatalf("versions after restore: %+v", vs)
	}
	want(t, v.Admin("POST", p+"/versions/00000000000000000001/restore", nil), 404, "not_found")
	// A malformed version id is 400 invalid_version_id, before the store
	// is read.
	for _, id := range []string{"x", "1", "0000000000000000000x", "000000000000000000001", "99999999999999999999", "%2E%2E"} {
		want(t, v.Admin("POST", p+"/versions/"+id+"/restore", nil), 400, enclave.ErrBadVersionID.Code)
	}

	// A second method is independent; the list shows both without cipherText.
	want(t, v.Admin("PUT", sharePath("alice", "PASSWORD"), map[string]any{"cipherText": ct2, "stored": true}), 201, "")
	r = v.Admin("GET", "/v1/admin/users/alice/client-shares", nil)
	want(t, r, 200, "")
	if bytes.Contains(r.Body, []byte(ct1)) || bytes.Contains(r.Body, []byte(ct2)) {
		t.Fatalf("the list holds a cipherText: %s", r.Body)
	}
	var list struct {
		Shares []Info `json:"shares"`
	}
	r.Decode(t, &list)
	if len(list.Shares) != 2 || list.Shares[0].Method != "GDRIVE" || list.Shares[1].Method != "PASSWORD" || !list.Shares[1].Stored {
		t.Fatalf("list: %s", r.Body)
	}

	// Delete removes the share and its versions.
	want(t, v.Admin("DELETE", p, nil), 204, "")
	want(t, v.Admin("GET", p, nil), 404, "not_found")
	want(t, v.Admin("DELETE", p, nil), 404, "not_found")
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	if len(vs.Versions) != 0 {
		t.Fatalf("versions survive the delete: %+v", vs)
	}
	want(t, v.Admin("PUT", p+"/status", map[string]any{"stored": true}), 404, "not_found")
	want(t, v.Admin("GET", sharePath("alice", "PASSWORD"), nil), 200, "")
}

func TestRefusals(t *testing.T) {
	v := newEnv(t)
	want(t, v.Admin("PUT", sharePath("bob", "ICLOUD"), map[string]any{"cipherText": ct1}), 201, "")
	big := strings.Repeat("A", 70<<10)
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"lower-case method", "PUT", sharePath("bob", "gdrive"), map[string]any{"cipherText": ct1}, 400, "invalid_method"},
		{"unknown method", "PUT", sharePath("bob", "DROPBOX"), map[string]any{"cipherText": ct1}, 400, "invalid_method"},
		{"unknown method GET", "GET", sharePath("bob", "default"), nil, 400, "invalid_method"},
		{"unknown method status", "PUT", sharePath("bob", "OTHER") + "/status", map[string]any{"stored": true}, 400, "invalid_method"},
		{"bad user id", "PUT", sharePath("b%20ob", "ICLOUD"), map[string]any{"cipherText": ct1}, 400, "invalid_user_id"},
		{"missing cipherText", "PUT", sharePath("bob", "ICLOUD"), map[string]any{"stored": true}, 400, "invalid_cipher_text"},
		{"empty cipherText", "PUT", sharePath("bob", "ICLOUD"), map[string]any{"cipherText": ""}, 400, "invalid_cipher_text"},
		{"cipherText not a string", "PUT", sharePath("bob", "ICLOUD"), `{"cipherText":42}`, 400, "invalid_json"},
		{"malformed JSON", "PUT", sharePath("bob", "ICLOUD"), `{"cipherText":`, 400, "invalid_json"},
		{"status missing", "PUT", sharePath("bob", "ICLOUD") + "/status", map[string]any{}, 400, "bad_request"},
		{"status not a bool", "PUT", sharePath("bob", "ICLOUD") + "/status", `{"stored":"yes"}`, 400, "invalid_json"},
		{"over the body limit", "PUT", sharePath("bob", "ICLOUD"), map[string]any{"cipherText": big}, 413, "body_too_large"},
		{"wrong HTTP method", "PATCH", sharePath("bob", "ICLOUD"), nil, 405, "method_not_allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want(t, v.Admin(c.method, c.path, c.body), c.status, c.code)
		})
	}
	// Nothing of the refused requests changed bob's share.
	var got shareBody
	v.Admin("GET", sharePath("bob", "ICLOUD"), nil).Decode(t, &got)
	if got.CipherText != ct1 || got.Version != 1 {
		t.Fatalf("a refused request changed the share: %+v", got)
	}
}

// With a body limit above MaxCipherTextBytes the package's own limit holds.
func TestCipherTextLimit(t *testing.T) {
	v := newEnv(t, func(c *config.Config, _ *Options) { c.Limits.MaxBodyBytes = 256 << 10 })
	p := sharePath("carol", "PASSKEY")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": strings.Repeat("x", MaxCipherTextBytes+1)}), 413, "body_too_large")
	want(t, v.Admin("GET", p, nil), 404, "not_found")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": strings.Repeat("x", MaxCipherTextBytes)}), 201, "")
	var got shareBody
	v.Admin("GET", p, nil).Decode(t, &got)
	if len(got.CipherText) != MaxCipherTextBytes {
		t.Fatalf("got %d bytes back", len(got.CipherText))
	}
}

func TestUnauthenticated(t *testing.T) {
	v := newEnv(t)
	want(t, v.Admin("PUT", sharePath("dave", "FIREBASE"), map[string]any{"cipherText": ct1}), 201, "")
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong-key"}, {"Authorization", "Basic " + testAdminKey}} {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			r := v.Do(m, sharePath("dave", "FIREBASE"), map[string]any{"cipherText": ct2}, hdr...)
			want(t, r, 401, "admin_unauthorized")
			if bytes.Contains(r.Body, []byte(ct1)) {
				t.Fatal("a refusal holds the cipherText")
			}
		}
	}
	var got shareBody
	v.Admin("GET", sharePath("dave", "FIREBASE"), nil).Decode(t, &got)
	if got.CipherText != ct1 {
		t.Fatal("an unauthenticated request changed the share")
	}
}

// The cipherText is sealed at rest, and a record moved to another user or
// method does not open.
func TestSealedAtRest(t *testing.T) {
	v := newEnv(t)
	want(t, v.Admin("PUT", sharePath("erin", "PASSWORD"), map[string]any{"cipherText": ct1}), 201, "")
	want(t, v.Admin("PUT", sharePath("erin", "PASSWORD"), map[string]any{"cipherText": ct2}), 200, "")
	raw := v.rawBucket()
	if len(raw) != 2 {
		t.Fatalf("want a current record and a version, got %d records", len(raw))
	}
	for k, val := range raw {
		for _, ct := range []string{ct1, ct2, "client-share"} {
			if bytes.Contains(val, []byte(ct)) {
				t.Fatalf("record %q holds the cipherText in the clear", k)
			}
		}
	}
	cur := raw[string(store.Key("user:erin", "PASSWORD"))]
	for _, dst := range [][]byte{store.Key("user:mallory", "PASSWORD"), store.Key("user:erin", "GDRIVE")} {
		if err := v.DB.Update(context.Background(), func(tx *store.Tx) error {
			return tx.Put(store.BucketClientShares, dst, cur)
		}); err != nil {
			t.Fatal(err)
		}
	}
	want(t, v.Admin("GET", sharePath("mallory", "PASSWORD"), nil), 500, "record_damaged")
	want(t, v.Admin("GET", sharePath("erin", "GDRIVE"), nil), 500, "record_damaged")
	var got shareBody
	v.Admin("GET", sharePath("erin", "PASSWORD"), nil).Decode(t, &got)
	if got.CipherText != ct2 {
		t.Fatal("the original record no longer opens")
	}
	// A damaged prior version is never made current.
	vk := store.Key("user:mallory", "PASSWORD", versionsSub, "00000000000000000042")
	_ = v.DB.Update(context.Background(), func(tx *store.Tx) error { return tx.Put(store.BucketClientShares, vk, cur) })
	want(t, v.Admin("POST", sharePath("mallory", "PASSWORD")+"/versions/00000000000000000042/restore", nil), 500, "record_damaged")
}

func TestUserDescribeAndDelete(t *testing.T) {
	v := newEnv(t)
	want(t, v.Admin("PUT", sharePath("frank", "PASSKEY"), map[string]any{"cipherText": ct1, "stored": true}), 201, "")
	want(t, v.Admin("PUT", sharePath("frank", "PASSKEY"), map[string]any{"cipherText": ct2}), 200, "")
	want(t, v.Admin("PUT", sharePath("grace", "PASSKEY"), map[string]any{"cipherText": ct1}), 201, "")

	r := v.Admin("GET", "/v1/admin/users/frank", nil)
	want(t, r, 200, "")
	if bytes.Contains(r.Body, []byte(ct1)) || bytes.Contains(r.Body, []byte(ct2)) {
		t.Fatalf("the description holds a cipherText: %s", r.Body)
	}
	var d struct {
		Data struct {
			ClientShares []Info `json:"clientShares"`
		} `json:"data"`
	}
	r.Decode(t, &d)
	if len(d.Data.ClientShares) != 1 || d.Data.ClientShares[0].Method != "PASSKEY" {
		t.Fatalf("description: %s", r.Body)
	}

	want(t, v.Admin("DELETE", "/v1/admin/users/frank", nil), 204, "")
	want(t, v.Admin("GET", sharePath("frank", "PASSKEY"), nil), 404, "not_found")
	for k := range v.rawBucket() {
		if strings.HasPrefix(k, "user:frank\x00") {
			t.Fatalf("record %q survives the user's deletion", k)
		}
	}
	want(t, v.Admin("GET", sharePath("grace", "PASSKEY"), nil), 200, "")
}

func TestAuditLinesWithoutCipherText(t *testing.T) {
	v := newEnv(t)
	p := sharePath("heidi", "ICLOUD")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct1}), 201, "")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), 200, "")
	want(t, v.Admin("GET", p, nil), 200, "")
	want(t, v.Admin("PUT", p+"/status", map[string]any{"stored": true}), 200, "")
	var vs struct{ Versions []VersionInfo }
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	want(t, v.Admin("POST", p+"/versions/"+vs.Versions[0].ID+"/restore", nil), 200, "")
	want(t, v.Admin("DELETE", p, nil), 204, "")

	lines := v.AuditLines(t)
	for _, s := range []string{ct1, ct2, "client-share-", testAdminKey} {
		if strings.Contains(lines, s) {
			t.Fatalf("an audit line holds a secret (%q…)", s[:8])
		}
	}
	type line struct {
		Action, Owner, Method, Actor string
		Fields                       map[string]string
	}
	count := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		var ln line
		if err := json.Unmarshal([]byte(l), &ln); err != nil {
			t.Fatal(err)
		}
		if ln.Fields["kind"] != auditKind {
			continue
		}
		if ln.Owner != "user:heidi" || ln.Method != "ICLOUD" || !strings.HasPrefix(ln.Actor, "admin:") {
			t.Fatalf("audit line %s", l)
		}
		count[ln.Action]++
	}
	wantCount := map[string]int{"store": 2, "release": 1, ActionStatus: 1, ActionRestore: 1, "delete": 1}
	for a, n := range wantCount {
		if count[a] != n {
			t.Fatalf("%d %q lines, want %d (all: %v)", count[a], a, n, count)
		}
	}
}

// Fail closed: with the audit log closed nothing is stored or released.
func TestAuditUnavailable(t *testing.T) {
	v := newEnv(t)
	p := sharePath("ivan", "PASSWORD")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct1}), 201, "")
	v.Audit.Close(context.Background())
	r := v.Admin("GET", p, nil)
	want(t, r, 503, "audit_unavailable")
	if bytes.Contains(r.Body, []byte(ct1)) {
		t.Fatal("released without an audit line")
	}
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), 503, "audit_unavailable")
	want(t, v.Admin("DELETE", p, nil), 503, "audit_unavailable")
	want(t, v.Admin("PUT", sharePath("judy", "PASSWORD"), map[string]any{"cipherText": ct2}), 503, "audit_unavailable")
	sh, err := v.store.Get(context.Background(), enclave.UserOwner("ivan"), "PASSWORD")
	if err != nil || sh.CipherText.Reveal() != ct1 {
		t.Fatalf("the share changed without an audit line: %v", err)
	}
	if _, err := v.store.Info(context.Background(), enclave.UserOwner("judy"), "PASSWORD"); err == nil {
		t.Fatal("stored without an audit line")
	}
}

func TestRetention(t *testing.T) {
	v := newEnv(t, func(_ *config.Config, o *Options) { o.VersionRetention = time.Hour })
	p := sharePath("kim", "GDRIVE")
	for i := 0; i < 3; i++ {
		want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct1 + string(rune('a'+i))}), []int{201, 200, 200}[i], "")
		v.now = v.now.Add(40 * time.Minute)
	}
	var vs struct{ Versions []VersionInfo }
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	// Versions replaced at +40m and +80m; at +80m the cutoff is +20m.
	if len(vs.Versions) != 2 {
		t.Fatalf("versions: %+v", vs.Versions)
	}
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), 200, "")
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	// Now +120m: the cutoff is +60m, so the one replaced at +40m is gone.
	if len(vs.Versions) != 2 || !vs.Versions[0].ReplacedAt.Equal(time.Date(2025, 3, 1, 13, 20, 0, 0, time.UTC)) {
		t.Fatalf("versions after pruning: %+v", vs.Versions)
	}
}

func TestNoRetention(t *testing.T) {
	v := newEnv(t, func(_ *config.Config, o *Options) { o.VersionRetention = -1 })
	p := sharePath("kim", "GDRIVE")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct1}), 201, "")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), 200, "")
	var vs struct{ Versions []VersionInfo }
	v.Admin("GET", p+"/versions", nil).Decode(t, &vs)
	if len(vs.Versions) != 0 || len(v.rawBucket()) != 1 {
		t.Fatalf("negative retention kept %d versions", len(vs.Versions))
	}
}

// TestAnswersNoStore: a client share is secret material; neither it nor
// the routes around it may be kept by a cache on the way.
func TestAnswersNoStore(t *testing.T) {
	v := newEnv(t)
	p := sharePath("alice", "GDRIVE")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct1}), http.StatusCreated, "")
	want(t, v.Admin("PUT", p, map[string]any{"cipherText": ct2}), http.StatusOK, "")
	for _, path := range []string{p, p + "/versions", "/v1/admin/users/alice/client-shares", sharePath("alice", "ICLOUD")} {
		r := v.Admin("GET", path, nil)
		if r.Status != 200 && r.Status != 404 {
			t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
		}
		if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
			t.Errorf("GET %s (%d): Cache-Control %q, want no-store", path, r.Status, cc)
		}
	}
}
