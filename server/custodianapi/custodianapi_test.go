package custodianapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/store"
)

// shareText is a custodian share as Portal's backups carry it (a JSON
// string); distinctive so a leak shows up in any text.
func shareText(n int) []byte {
	return []byte(fmt.Sprintf(`{"custodianShareSecret":"s%03d-%s"}`, n, strings.Repeat("k", 200)))
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func (v *env) getShare(user, method string) []byte {
	v.t.Helper()
	r := v.Admin("GET", sharePath(user, method), nil)
	want(v.t, r, 200, "")
	var s shareBody
	r.Decode(v.t, &s)
	b, err := base64.StdEncoding.DecodeString(s.Share)
	if err != nil {
		v.t.Fatalf("share is not base64: %v", err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	v := newEnv(t, envOpts{})
	s1, s2, s3 := shareText(1), shareText(2), shareText(3)

	want(t, v.Admin("GET", sharePath("alice", ""), nil), 404, "not_found")
	r := v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(s1)})
	want(t, r, http.StatusCreated, "")
	var info infoBody
	r.Decode(t, &info)
	if info.Method != DefaultMethod || info.KeyVersion != 1 || bytes.Contains(r.Body, []byte(b64(s1))) {
		t.Fatalf("PUT answered %s", r.Body)
	}
	if got := v.getShare("alice", ""); !bytes.Equal(got, s1) {
		t.Fatal("round trip changed the share")
	}
	// ?method=default is the same share.
	if got := v.getShare("alice", "default"); !bytes.Equal(got, s1) {
		t.Fatal("?method=default is another share")
	}

	// Another method is another share.
	want(t, v.Admin("PUT", sharePath("alice", "PASSKEY-SECP256K1"), map[string]string{"share": b64(s2)}), 201, "")
	if got := v.getShare("alice", ""); !bytes.Equal(got, s1) {
		t.Fatal("a second method replaced the default share")
	}

	// Replace: 200, the old one kept as a prior version and restorable.
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(s3)}), http.StatusOK, "")
	if got := v.getShare("alice", ""); !bytes.Equal(got, s3) {
		t.Fatal("replace did not take")
	}
	var vs struct {
		Versions []custodian.VersionInfo `json:"versions"`
	}
	v.Admin("GET", "/v1/admin/users/alice/custodian-share/versions", nil).Decode(t, &vs)
	if len(vs.Versions) != 1 || vs.Versions[0].Method != DefaultMethod {
		t.Fatalf("versions: %+v", vs)
	}
	want(t, v.Admin("POST", "/v1/admin/users/alice/custodian-share/versions/"+vs.Versions[0].ID+"/restore", nil), 204, "")
	if got := v.getShare("alice", ""); !bytes.Equal(got, s1) {
		t.Fatal("restore did not bring the old share back")
	}
	want(t, v.Admin("POST", "/v1/admin/users/alice/custodian-share/versions/00000000000000000007/restore", nil), 404, "not_found")
	want(t, v.Admin("POST", "/v1/admin/users/alice/custodian-share/versions/7/restore", nil), 400, "invalid_version_id") // malformed: refused before anything is audited

	// Descriptions carry no share.
	for _, p := range []string{"/v1/admin/users/alice/custodian-shares", "/v1/admin/users/alice"} {
		r := v.Admin("GET", p, nil)
		want(t, r, 200, "")
		for _, s := range [][]byte{s1, s2, s3} {
			if bytes.Contains(r.Body, []byte(b64(s))) || bytes.Contains(r.Body, []byte("custodianShareSecret")) {
				t.Fatalf("%s holds a share: %s", p, r.Body)
			}
		}
	}
	var list struct {
		Shares []custodian.ShareInfo `json:"shares"`
	}
	v.Admin("GET", "/v1/admin/users/alice/custodian-shares", nil).Decode(t, &list)
	if len(list.Shares) != 2 || list.Shares[0].Method != "PASSKEY-SECP256K1" || list.Shares[1].Method != DefaultMethod || list.Shares[1].KeyVersion != 1 {
		t.Fatalf("list: %+v", list)
	}
	var user struct {
		Data struct {
			CustodianShares []custodian.ShareInfo `json:"custodianShares"`
		} `json:"data"`
	}
	v.Admin("GET", "/v1/admin/users/alice", nil).Decode(t, &user)
	if len(user.Data.CustodianShares) != 2 {
		t.Fatalf("user description: %+v", user)
	}

	// Only ciphertexts are stored.
	for k, val := range v.rawBucket() {
		if strings.Contains(val, "custodianShareSecret") || strings.Contains(val, b64(s1)) || !strings.Contains(val, `"vault:v1:`) {
			t.Fatalf("record %q is not a bare Transit ciphertext: %s", k, val)
		}
	}

	want(t, v.Admin("DELETE", sharePath("alice", ""), nil), 204, "")
	want(t, v.Admin("GET", sharePath("alice", ""), nil), 404, "not_found")
	want(t, v.Admin("DELETE", sharePath("alice", ""), nil), 404, "not_found")
	if got := v.getShare("alice", "PASSKEY-SECP256K1"); !bytes.Equal(got, s2) {
		t.Fatal("deleting one method touched another")
	}

	// Deleting the user removes the rest.
	want(t, v.Admin("PUT", sharePath("bob", ""), map[string]string{"share": b64(s1)}), 201, "")
	want(t, v.Admin("DELETE", "/v1/admin/users/alice", nil), 204, "")
	for k := range v.rawBucket() {
		if strings.HasPrefix(k, "user:alice\x00") {
			t.Fatalf("record %q survives the user's deletion", k)
		}
	}
	want(t, v.Admin("GET", sharePath("alice", "PASSKEY-SECP256K1"), nil), 404, "not_found")
	if got := v.getShare("bob", ""); !bytes.Equal(got, s1) {
		t.Fatal("deleting alice touched bob")
	}
}

type batchResults struct {
	Results []struct {
		UserID string `json:"userId"`
		Method string `json:"method"`
		Status int    `json:"status"`
		Share  string `json:"share"`
		Error  *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"results"`
}

func (b batchResults) codes() []string {
	var out []string
	for _, r := range b.Results {
		switch {
		case r.Error != nil:
			out = append(out, r.Error.Code)
		case r.Share != "":
			out = append(out, "share:"+r.Share)
		default:
			out = append(out, strconv.Itoa(r.Status))
		}
	}
	return out
}

func TestBatch(t *testing.T) {
	v := newEnv(t, envOpts{maxBatch: 6})
	s1, s2, s3 := shareText(1), shareText(2), shareText(3)
	r := v.Admin("POST", "/v1/admin/custodian-shares/batch-put", map[string]any{"items": []map[string]string{
		{"userId": "alice", "share": b64(s1)},
		{"userId": "bob", "method": "GDRIVE-ED25519", "share": b64(s2)},
		{"userId": "not valid!", "share": b64(s3)},
		{"userId": "carol", "share": "%%%not base64"},
		{"userId": "dave", "share": ""},
		{"userId": "erin", "method": strings.Repeat("m", 200), "share": b64(s3)},
	}})
	want(t, r, 200, "")
	var res batchResults
	r.Decode(t, &res)
	wantCodes := []string{"201", "201", "invalid_user_id", "invalid_share", "invalid_share", "bad_request"}
	if got := res.codes(); fmt.Sprint(got) != fmt.Sprint(wantCodes) {
		t.Fatalf("batch-put results %v, want %v", got, wantCodes)
	}
	if res.Results[1].UserID != "bob" || res.Results[1].Method != "GDRIVE-ED25519" || res.Results[0].Method != DefaultMethod {
		t.Fatalf("results do not name their items: %s", r.Body)
	}
	if len(v.rawBucket()) != 2 {
		t.Fatalf("%d records stored, want 2", len(v.rawBucket()))
	}

	r = v.Admin("POST", "/v1/admin/custodian-shares/batch-put", map[string]any{"items": []map[string]string{
		{"userId": "alice", "method": "default", "share": b64(s3)},
	}})
	res = batchResults{}
	r.Decode(t, &res)
	if got := res.codes(); fmt.Sprint(got) != "[200]" {
		t.Fatalf("replace in a batch: %v", got)
	}

	r = v.Admin("POST", "/v1/admin/custodian-shares/batch-get", map[string]any{"items": []map[string]string{
		{"userId": "alice"},
		{"userId": "bob", "method": "GDRIVE-ED25519"},
		{"userId": "bob"},
		{"userId": "x y"},
	}})
	want(t, r, 200, "")
	res = batchResults{}
	r.Decode(t, &res)
	wantCodes = []string{"share:" + b64(s3), "share:" + b64(s2), "not_found", "invalid_user_id"}
	if got := res.codes(); fmt.Sprint(got) != fmt.Sprint(wantCodes) {
		t.Fatalf("batch-get results %v, want %v", got, wantCodes)
	}

	for _, path := range []string{"/v1/admin/custodian-shares/batch-put", "/v1/admin/custodian-shares/batch-get"} {
		want(t, v.Admin("POST", path, map[string]any{"items": []any{}}), 400, "no_items")
		want(t, v.Admin("POST", path, `{}`), 400, "no_items")
		want(t, v.Admin("POST", path, `{"items":[`), 400, "invalid_json")
		seven := make([]map[string]string, 7)
		for i := range seven {
			seven[i] = map[string]string{"userId": "u" + strconv.Itoa(i), "share": b64(s1)}
		}
		want(t, v.Admin("POST", path, map[string]any{"items": seven}), 400, "too_many_items")
	}

	// One audit line per stored or released item.
	n := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(v.AuditLines(v.t)), "\n") {
		var ln struct {
			Action string
			Fields map[string]string
		}
		_ = json.Unmarshal([]byte(l), &ln)
		if ln.Fields["batch"] == "true" && ln.Fields["kind"] == auditKind {
			n[ln.Action]++
		}
	}
	if n["store"] != 3 || n["release"] != 2 {
		t.Fatalf("batch audit lines %v, want 3 stores and 2 releases", n)
	}
}

func TestRewrapJob(t *testing.T) {
	v := newEnv(t, envOpts{service: custodian.ServiceOptions{JobBatchSize: 4}})
	items := make([]map[string]string, 20)
	for i := range items {
		items[i] = map[string]string{"userId": fmt.Sprintf("user%02d", i), "share": b64(shareText(i))}
	}
	want(t, v.Admin("POST", "/v1/admin/custodian-shares/batch-put", map[string]any{"items": items}), 200, "")
	for i := 0; i < 3; i++ { // three prior versions
		want(t, v.Admin("PUT", sharePath(fmt.Sprintf("user%02d", i), ""), map[string]string{"share": b64(shareText(100 + i))}), 200, "")
	}
	latest := v.vault.RotateKey("keywarden-custodian")

	r := v.Admin("POST", "/v1/admin/custodian/rewrap", nil)
	want(t, r, http.StatusAccepted, "")
	var started struct {
		JobID string `json:"jobId"`
	}
	r.Decode(t, &started)
	if started.JobID == "" || r.Header.Get("Location") != "/v1/admin/custodian/rewrap/"+started.JobID {
		t.Fatalf("start answered %s (Location %q)", r.Body, r.Header.Get("Location"))
	}
	seen := v.waitJob(started.JobID)
	for i := 1; i < len(seen); i++ {
		if seen[i].Done < seen[i-1].Done || seen[i].Rewrapped < seen[i-1].Rewrapped {
			t.Fatalf("progress went backwards: %+v then %+v", seen[i-1], seen[i])
		}
	}
	j := seen[len(seen)-1]
	if j.State != custodian.JobDone || j.Total != 23 || j.Done != 23 || j.Rewrapped != 23 || j.Failed != 0 || j.TargetVersion != latest || j.Cursor != nil {
		t.Fatalf("final job %+v", j)
	}
	var jobs struct {
		Jobs []custodian.JobStatus `json:"jobs"`
	}
	v.Admin("GET", "/v1/admin/custodian/rewrap", nil).Decode(t, &jobs)
	if len(jobs.Jobs) != 1 || jobs.Jobs[0].ID != started.JobID || jobs.Jobs[0].State != custodian.JobDone {
		t.Fatalf("jobs: %+v", jobs)
	}
	for k, val := range v.rawBucket() {
		if !strings.Contains(val, fmt.Sprintf(`"vault:v%d:`, latest)) {
			t.Fatalf("record %q not rewrapped: %s", k, val)
		}
	}

	// With the old version retired, rewrapped shares (and prior versions) still open.
	v.vault.SetMinDecryptionVersion("keywarden-custodian", latest)
	if got := v.getShare("user07", ""); !bytes.Equal(got, shareText(7)) {
		t.Fatal("a rewrapped share does not open")
	}
	var vs struct{ Versions []custodian.VersionInfo }
	v.Admin("GET", sharePath("user01", "")+"/versions", nil).Decode(t, &vs)
	if len(vs.Versions) != 1 || vs.Versions[0].KeyVersion != latest {
		t.Fatalf("prior version: %+v", vs)
	}
	want(t, v.Admin("POST", "/v1/admin/users/user01/custodian-share/versions/"+vs.Versions[0].ID+"/restore", nil), 204, "")
	if got := v.getShare("user01", ""); !bytes.Equal(got, shareText(1)) {
		t.Fatal("a rewrapped prior version does not open")
	}

	// A second job finds nothing to do.
	r = v.Admin("POST", "/v1/admin/custodian/rewrap", nil)
	want(t, r, http.StatusAccepted, "")
	var again struct{ JobID string }
	r.Decode(t, &again)
	if again.JobID == started.JobID {
		t.Fatal("a finished job was started again")
	}
	seen = v.waitJob(again.JobID)
	if j := seen[len(seen)-1]; j.State != custodian.JobDone || j.Rewrapped != 0 || j.Done != j.Total {
		t.Fatalf("second job %+v", j)
	}

	want(t, v.Admin("GET", "/v1/admin/custodian/rewrap/0123456789abcdef01234567", nil), 404, "not_found")
	want(t, v.Admin("GET", "/v1/admin/custodian/rewrap/"+strings.Repeat("a", 65), nil), 400, "invalid_job_id")

	// Latency is exported by operation.
	mfs, err := v.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "keywarden_custodian_operation_duration_seconds" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == "op" && l.GetValue() == "batch_store")
				}
			}
		}
	}
	if !found {
		t.Fatal("no batch_store latency observed")
	}
}

// A share below min_decryption_version fails with a message naming its
// version; the rewrap job counts it as failed and names it.
func TestRetiredVersion(t *testing.T) {
	v := newEnv(t, envOpts{})
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(1))}), 201, "")
	latest := v.vault.RotateKey("keywarden-custodian")
	v.vault.SetMinDecryptionVersion("keywarden-custodian", latest)
	r := v.Admin("GET", sharePath("alice", ""), nil)
	want(t, r, http.StatusConflict, "ciphertext_version_retired")
	if !strings.Contains(r.Message(), "version 1") {
		t.Fatalf("the message does not name the version: %q", r.Message())
	}
	r = v.Admin("POST", "/v1/admin/custodian/rewrap", nil)
	want(t, r, http.StatusAccepted, "")
	var started struct{ JobID string }
	r.Decode(t, &started)
	seen := v.waitJob(started.JobID)
	j := seen[len(seen)-1]
	if j.State != custodian.JobDone || j.Failed != 1 || len(j.FailedItems) != 1 || j.FailedItems[0] != "user:alice/default: ciphertext_version_retired" {
		t.Fatalf("job %+v", j)
	}
}

func TestVaultStopped(t *testing.T) {
	v := newEnv(t, envOpts{client: func(o *custodian.Options) { o.MaxRetries = -1; o.Timeout = 2 * time.Second }})
	s1 := shareText(1)
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(s1)}), 201, "")
	before := v.rawBucket()
	v.vault.Stop()

	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(2))}},
		{"PUT", sharePath("bob", ""), map[string]string{"share": b64(shareText(3))}},
		{"GET", sharePath("alice", ""), nil},
		{"POST", "/v1/admin/custodian-shares/batch-put", map[string]any{"items": []map[string]string{{"userId": "carol", "share": b64(s1)}}}},
		{"POST", "/v1/admin/custodian-shares/batch-get", map[string]any{"items": []map[string]string{{"userId": "alice"}}}},
		{"POST", "/v1/admin/custodian/rewrap", nil},
	} {
		r := v.Admin(c.method, c.path, c.body)
		want(t, r, http.StatusServiceUnavailable, "vault_unavailable")
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("%s %s: Retry-After %q", c.method, c.path, r.Header.Get("Retry-After"))
		}
		if bytes.Contains(r.Body, []byte("custodianShareSecret")) {
			t.Fatal("a refusal holds a share")
		}
	}
	after := v.rawBucket()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the store changed while Vault was down:\nbefore %v\nafter  %v", before, after)
	}
	// What needs no Vault still works.
	want(t, v.Admin("GET", "/v1/admin/users/alice/custodian-shares", nil), 200, "")
	want(t, v.Admin("DELETE", sharePath("alice", ""), nil), 204, "")
}

func TestVaultSealed(t *testing.T) {
	v := newEnv(t, envOpts{client: func(o *custodian.Options) { o.MaxRetries = -1 }})
	s1 := shareText(1)
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(s1)}), 201, "")
	before := v.rawBucket()
	v.vault.Seal()
	for _, r := range []reply{
		v.Admin("GET", sharePath("alice", ""), nil),
		v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(2))}),
	} {
		want(t, r, http.StatusServiceUnavailable, "vault_unavailable")
		if r.Header.Get("Retry-After") == "" || !strings.Contains(r.Message(), "sealed") {
			t.Fatalf("sealed answer %v %s", r.Header, r.Body)
		}
	}
	if fmt.Sprint(v.rawBucket()) != fmt.Sprint(before) {
		t.Fatal("the store changed while Vault was sealed")
	}
	v.vault.Unseal()
	if got := v.getShare("alice", ""); !bytes.Equal(got, s1) {
		t.Fatal("the share does not open after unseal")
	}
}

func TestPolicyWithoutDecrypt(t *testing.T) {
	noDecrypt := `
path "transit/encrypt/keywarden-custodian" { capabilities = ["update"] }
path "transit/keys/keywarden-custodian"    { capabilities = ["read"] }
`
	v := newEnv(t, envOpts{policy: noDecrypt})
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(1))}), 201, "")
	r := v.Admin("GET", sharePath("alice", ""), nil)
	want(t, r, http.StatusBadGateway, "vault_forbidden")
	r = v.Admin("POST", "/v1/admin/custodian-shares/batch-get", map[string]any{"items": []map[string]string{{"userId": "alice"}}})
	want(t, r, http.StatusBadGateway, "vault_forbidden")
}

func TestTokenRevoked(t *testing.T) {
	v := newEnv(t, envOpts{})
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(1))}), 201, "")
	before := v.rawBucket()
	v.vault.RevokeToken(v.token)
	want(t, v.Admin("GET", sharePath("alice", ""), nil), http.StatusBadGateway, "vault_forbidden")
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(2))}), http.StatusBadGateway, "vault_forbidden")
	if fmt.Sprint(v.rawBucket()) != fmt.Sprint(before) {
		t.Fatal("the store changed with a revoked token")
	}
}

func TestNotConfigured(t *testing.T) {
	v := newEnv(t, envOpts{noVault: true})
	for _, c := range []struct{ method, path string }{
		{"PUT", sharePath("alice", "")}, {"GET", sharePath("alice", "")}, {"DELETE", sharePath("alice", "")},
		{"GET", "/v1/admin/users/alice/custodian-shares"}, {"GET", "/v1/admin/users/alice/custodian-share/versions"},
		{"POST", "/v1/admin/custodian-shares/batch-put"}, {"POST", "/v1/admin/custodian-shares/batch-get"},
		{"POST", "/v1/admin/custodian/rewrap"}, {"GET", "/v1/admin/custodian/rewrap"}, {"GET", "/v1/admin/custodian/rewrap/x"},
	} {
		r := v.Admin(c.method, c.path, map[string]string{"share": b64(shareText(1))})
		want(t, r, http.StatusServiceUnavailable, "custodian_not_configured")
		if !strings.Contains(r.Message(), "vault.addr") {
			t.Fatalf("the message does not say what to configure: %q", r.Message())
		}
	}
	// Records left from a time with Vault are still described and deleted
	// with the user.
	rec := `{"ciphertext":"vault:v1:AAAA","keyVersion":1}`
	if err := v.DB.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.Put(store.BucketCustodian, store.Key("user:zoe", "default"), []byte(rec)); err != nil {
			return err
		}
		return tx.Put(store.BucketCustodian, store.Key("user:zoe", "default", "versions", "00000000000000000001"), []byte(rec))
	}); err != nil {
		t.Fatal(err)
	}
	r := v.Admin("GET", "/v1/admin/users/zoe", nil)
	want(t, r, 200, "")
	if !strings.Contains(string(r.Body), `"custodianShares":[{"method":"default"`) || strings.Contains(string(r.Body), "vault:v1") {
		t.Fatalf("description: %s", r.Body)
	}
	want(t, v.Admin("DELETE", "/v1/admin/users/zoe", nil), 204, "")
	if n := len(v.rawBucket()); n != 0 {
		t.Fatalf("%d records survive the user's deletion", n)
	}
}

func TestRefusals(t *testing.T) {
	v := newEnv(t, envOpts{maxBody: 256 << 10})
	want(t, v.Admin("PUT", sharePath("bob", ""), map[string]string{"share": b64(shareText(1))}), 201, "")
	before := v.rawBucket()
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"not base64", "PUT", sharePath("bob", ""), map[string]string{"share": "!!!"}, 400, "invalid_share"},
		{"base64url", "PUT", sharePath("bob", ""), map[string]string{"share": "-_-_"}, 400, "invalid_share"},
		{"empty share", "PUT", sharePath("bob", ""), map[string]string{"share": ""}, 400, "invalid_share"},
		{"no share", "PUT", sharePath("bob", ""), map[string]string{}, 400, "invalid_share"},
		{"share too large", "PUT", sharePath("bob", ""), map[string]string{"share": b64(make([]byte, custodian.MaxShareSize+1))}, 400, "invalid_share"},
		{"over the body limit", "PUT", sharePath("bob", ""), map[string]string{"share": b64(make([]byte, 200<<10))}, 413, "body_too_large"},
		{"malformed JSON", "PUT", sharePath("bob", ""), `{"share":`, 400, "invalid_json"},
		{"share not a string", "PUT", sharePath("bob", ""), `{"share":7}`, 400, "invalid_json"},
		{"bad user id", "PUT", "/v1/admin/users/b%2Fob/custodian-share", map[string]string{"share": b64(shareText(2))}, 400, "invalid_user_id"},
		{"method too long", "PUT", sharePath("bob", strings.Repeat("m", 129)), map[string]string{"share": b64(shareText(2))}, 400, "bad_request"},
		{"method with NUL", "GET", sharePath("bob", "a%00b"), nil, 400, "bad_request"},
		{"wrong HTTP method", "PATCH", sharePath("bob", ""), nil, 405, "method_not_allowed"},
		{"unknown job", "GET", "/v1/admin/custodian/rewrap/feedfeedfeedfeedfeedfeed", nil, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { want(t, v.Admin(c.method, c.path, c.body), c.status, c.code) })
	}
	// The largest share is accepted.
	want(t, v.Admin("PUT", sharePath("max", ""), map[string]string{"share": b64(bytes.Repeat([]byte{7}, custodian.MaxShareSize))}), 201, "")
	after := v.rawBucket()
	delete(after, string(store.Key("user:max", "default")))
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("a refused request changed the store")
	}
}

func TestUnauthenticated(t *testing.T) {
	v := newEnv(t, envOpts{})
	s1 := shareText(1)
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(s1)}), 201, "")
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer not-the-key"}, {"Authorization", testAdminKey}} {
		for _, c := range []struct{ method, path string }{
			{"GET", sharePath("alice", "")}, {"PUT", sharePath("alice", "")}, {"DELETE", sharePath("alice", "")},
			{"POST", "/v1/admin/custodian-shares/batch-get"}, {"POST", "/v1/admin/custodian-shares/batch-put"},
			{"POST", "/v1/admin/custodian/rewrap"}, {"GET", "/v1/admin/custodian/rewrap"},
		} {
			r := v.Do(c.method, c.path, map[string]any{"share": b64(shareText(2)), "items": []map[string]string{{"userId": "alice"}}}, hdr...)
			want(t, r, http.StatusUnauthorized, "admin_unauthorized")
			if bytes.Contains(r.Body, []byte("custodianShareSecret")) || bytes.Contains(r.Body, []byte(b64(s1))) {
				t.Fatal("a refusal holds a share")
			}
		}
	}
	if got := v.getShare("alice", ""); !bytes.Equal(got, s1) {
		t.Fatal("an unauthenticated request changed the share")
	}
	var jobs struct{ Jobs []custodian.JobStatus }
	v.Admin("GET", "/v1/admin/custodian/rewrap", nil).Decode(t, &jobs)
	if len(jobs.Jobs) != 0 {
		t.Fatal("an unauthenticated request started a job")
	}
}

func TestAuditLines(t *testing.T) {
	v := newEnv(t, envOpts{})
	s1, s2 := shareText(1), shareText(2)
	want(t, v.Admin("PUT", sharePath("alice", "m1"), map[string]string{"share": b64(s1)}), 201, "")
	want(t, v.Admin("PUT", sharePath("alice", "m1"), map[string]string{"share": b64(s2)}), 200, "")
	want(t, v.Admin("GET", sharePath("alice", "m1"), nil), 200, "")
	var vs struct{ Versions []custodian.VersionInfo }
	v.Admin("GET", "/v1/admin/users/alice/custodian-share/versions?method=m1", nil).Decode(t, &vs)
	want(t, v.Admin("POST", "/v1/admin/users/alice/custodian-share/versions/"+vs.Versions[0].ID+"/restore?method=m1", nil), 204, "")
	want(t, v.Admin("POST", "/v1/admin/custodian-shares/batch-get", map[string]any{"items": []map[string]string{{"userId": "alice", "method": "m1"}}}), 200, "")
	r := v.Admin("POST", "/v1/admin/custodian/rewrap", nil)
	var started struct{ JobID string }
	r.Decode(t, &started)
	v.waitJob(started.JobID)
	want(t, v.Admin("DELETE", sharePath("alice", "m1"), nil), 204, "")

	lines := v.AuditLines(v.t)
	for _, s := range []string{b64(s1), b64(s2), "custodianShareSecret", testAdminKey, v.token, "vault:v"} {
		if strings.Contains(lines, s) {
			t.Fatalf("an audit line holds a secret or ciphertext (%q…)", s[:8])
		}
	}
	n := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		var ln struct {
			Action, Owner, Method, Actor string
			Fields                       map[string]string
		}
		if err := json.Unmarshal([]byte(l), &ln); err != nil {
			t.Fatal(err)
		}
		if ln.Fields["kind"] != auditKind {
			continue
		}
		if !strings.HasPrefix(ln.Actor, "admin:") || (ln.Action != ActionRewrap && (ln.Owner != "user:alice" || ln.Method != "m1")) {
			t.Fatalf("audit line %s", l)
		}
		n[ln.Action]++
	}
	wantN := map[string]int{"store": 2, "release": 2, ActionRestore: 1, ActionRewrap: 1, "delete": 1}
	if fmt.Sprint(n) != fmt.Sprint(wantN) {
		t.Fatalf("audit lines %v, want %v", n, wantN)
	}
}

// Fail closed: with the audit log closed nothing is stored or released.
func TestAuditUnavailable(t *testing.T) {
	v := newEnv(t, envOpts{})
	s1 := shareText(1)
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(s1)}), 201, "")
	before := v.rawBucket()
	v.Audit.Close(context.Background())
	for _, r := range []reply{
		v.Admin("GET", sharePath("alice", ""), nil),
		v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(2))}),
		v.Admin("PUT", sharePath("bob", ""), map[string]string{"share": b64(shareText(2))}),
		v.Admin("DELETE", sharePath("alice", ""), nil),
		v.Admin("POST", "/v1/admin/custodian-shares/batch-get", map[string]any{"items": []map[string]string{{"userId": "alice"}}}),
		v.Admin("POST", "/v1/admin/custodian-shares/batch-put", map[string]any{"items": []map[string]string{{"userId": "carol", "share": b64(s1)}}}),
		v.Admin("POST", "/v1/admin/custodian/rewrap", nil),
	} {
		want(t, r, http.StatusServiceUnavailable, "audit_unavailable")
		if bytes.Contains(r.Body, []byte(b64(s1))) {
			t.Fatal("released without an audit line")
		}
	}
	if fmt.Sprint(v.rawBucket()) != fmt.Sprint(before) {
		t.Fatal("the store changed without audit lines")
	}
}

// TestAnswersNoStore: an unwrapped custodian share is secret material;
// neither it nor the routes around it may be kept by a cache on the way.
func TestAnswersNoStore(t *testing.T) {
	v := newEnv(t, envOpts{})
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(1))}), http.StatusCreated, "")
	want(t, v.Admin("PUT", sharePath("alice", ""), map[string]string{"share": b64(shareText(2))}), http.StatusOK, "")
	check := func(r reply, what string) {
		t.Helper()
		if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
			t.Errorf("%s (%d): Cache-Control %q, want no-store", what, r.Status, cc)
		}
	}
	for _, path := range []string{sharePath("alice", ""), sharePath("alice", "default") + "&x=1", "/v1/admin/users/alice/custodian-share/versions",
		"/v1/admin/users/alice/custodian-shares", sharePath("bob", "")} {
		r := v.Admin("GET", path, nil)
		if r.Status != 200 && r.Status != 404 {
			t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
		}
		check(r, "GET "+path)
	}
	r := v.Admin("POST", "/v1/admin/custodian-shares/batch-get", map[string]any{"items": []map[string]string{{"userId": "alice"}}})
	want(t, r, 200, "")
	if !strings.Contains(string(r.Body), b64(shareText(2))) {
		t.Fatalf("batch-get did not return the share: %s", r.Body)
	}
	check(r, "POST batch-get")
}
