package custodianapi

import (
	"encoding/json"
	"testing"

	"github.com/keywarden/keywarden/custodian"
	"github.com/keywarden/keywarden/server"
)

// FuzzBatchRequest checks the validation of untrusted batch bodies: one
// result per item, and every item let through has a valid user id, a valid
// method and (for batch-put) a share of 1 to MaxShareSize bytes.
func FuzzBatchRequest(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"userId":"alice","share":"AQID"}]}`,
		`{"items":[{"userId":"alice","method":"PASSKEY-SECP256K1","share":"AQID"},{"userId":"bob"}]}`,
		`{"items":[{"userId":"a b","share":"AQID"},{"userId":"c","method":"\u0000"}]}`,
		`{"items":[]}`, `{}`, `{"items":[{"userId":"x","share":"===="}]}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, withShare bool) {
		var r batchRequest
		if json.Unmarshal(body, &r) != nil {
			return
		}
		results, items, err := r.check(50, withShare)
		if err != nil {
			if results != nil || items != nil {
				t.Fatal("an error with results")
			}
			return
		}
		if len(results) != len(r.Items) || len(items) > len(r.Items) {
			t.Fatalf("%d results, %d items for %d inputs", len(results), len(items), len(r.Items))
		}
		for _, it := range items {
			in := r.Items[it.index]
			if server.ValidUserID(in.UserID) != nil || validMethod(it.method) != nil || results[it.index].Error != nil {
				t.Fatalf("let through %+v", in)
			}
			if withShare && (it.share.Len() == 0 || it.share.Len() > custodian.MaxShareSize) {
				t.Fatalf("let through a share of %d bytes", it.share.Len())
			}
		}
	})
}
