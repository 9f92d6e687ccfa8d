package custodianapi

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/custodian"
)

// TestCustodianOwnerRoutes: the custodian shares of an owner of any kind
// (a user's, and a Firebase user's whose owner holds '/') are described,
// listed and restored through /v1/admin/owners/{owner}/custodian-shares,
// the owner URL-escaped in one segment; a bad owner is 400 invalid_owner.
func TestCustodianOwnerRoutes(t *testing.T) {
	v := newEnv(t, envOpts{})
	ctx := context.Background()
	s1, s2 := []byte("custodian-share-one"), []byte("custodian-share-two")

	// user: through its own route, then through the owner route.
	want(t, v.Admin("PUT", sharePath("alice", "GDRIVE"), map[string]string{"share": b64(s1)}), 201, "")
	want(t, v.Admin("PUT", sharePath("alice", "GDRIVE"), map[string]string{"share": b64(s2)}), 200, "")

	// firebase: has no share route of its own: stored by the service.
	fb := "firebase:proj-a/tenant-1/uid-9"
	for _, s := range [][]byte{s1, s2} {
		if _, err := v.svc.Put(ctx, fb, "PASSKEY-SECP256K1", s); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct{ owner, method string }{{"user:alice", "GDRIVE"}, {fb, "PASSKEY-SECP256K1"}} {
		base := "/v1/admin/owners/" + url.PathEscape(tc.owner) + "/custodian-shares"
		r := v.Admin("GET", base, nil)
		want(t, r, 200, "")
		if !strings.Contains(string(r.Body), `"method":"`+tc.method+`"`) || bytes.Contains(r.Body, []byte(b64(s1))) || bytes.Contains(r.Body, []byte(b64(s2))) {
			t.Fatalf("%s: list %s", tc.owner, r.Body)
		}
		// The general description has them too, without the shares.
		r = v.Admin("GET", "/v1/admin/owners/"+url.PathEscape(tc.owner), nil)
		want(t, r, 200, "")
		if !strings.Contains(string(r.Body), `"custodianShares":[{"method":"`+tc.method+`"`) || bytes.Contains(r.Body, []byte(b64(s1))) {
			t.Fatalf("%s: describe %s", tc.owner, r.Body)
		}

		var vs struct {
			Versions []custodian.VersionInfo `json:"versions"`
		}
		r = v.Admin("GET", base+"/"+url.PathEscape(tc.method)+"/versions", nil)
		want(t, r, 200, "")
		r.Decode(t, &vs)
		if len(vs.Versions) != 1 || vs.Versions[0].Method != tc.method {
			t.Fatalf("%s: versions %+v", tc.owner, vs)
		}
		want(t, v.Admin("POST", base+"/"+url.PathEscape(tc.method)+"/versions/"+vs.Versions[0].ID+"/restore", nil), 204, "")
		got, err := v.svc.Get(ctx, tc.owner, tc.method)
		if err != nil || !bytes.Equal(got.Reveal(), s1) {
			t.Fatalf("%s: after the restore: %v", tc.owner, err)
		}
		got.Wipe()
		want(t, v.Admin("POST", base+"/"+url.PathEscape(tc.method)+"/versions/7/restore", nil), 400, "invalid_version_id")
	}

	for _, o := range []string{"alice", "other:x", "user:"} {
		base := "/v1/admin/owners/" + url.PathEscape(o) + "/custodian-shares"
		want(t, v.Admin("GET", base, nil), 400, "invalid_owner")
		want(t, v.Admin("GET", base+"/GDRIVE/versions", nil), 400, "invalid_owner")
		want(t, v.Admin("POST", base+"/GDRIVE/versions/00000000000000000001/restore", nil), 400, "invalid_owner")
	}
}
