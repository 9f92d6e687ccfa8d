package portal

import (
	"net/http"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/softauthn"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/server/passkey"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// TestPortalSessionIDAcrossNodes: a Portal login begun on node A finishes
// on node B with A's sessionId (every node checks the sessionId's tag and
// finds the ceremony), once: replayed on A or B it is refused. On bbolt
// the one node plays both parts.
func TestPortalSessionIDAcrossNodes(t *testing.T) {
	pairs := []struct {
		name  string
		nodes func(t *testing.T) (a, b *harness)
	}{
		{"bbolt-one-node", func(t *testing.T) (*harness, *harness) {
			h := newHarness(t, harnessOptions{})
			return h, h
		}},
		{"etcd-two-nodes", func(t *testing.T) (*harness, *harness) {
			c := etcddev.EmbeddedCluster(t, 3)
			core := []apptest.CoreOption{apptest.RootKey(enclave.NewRootKey()), apptest.StoreBackend(c.SharedBackend(etcdstore.Options{}))}
			a, b := newHarness(t, harnessOptions{core: core}), newHarness(t, harnessOptions{core: core})
			b.auth = a.auth
			return a, b
		}},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			a, b := p.nodes(t)
			a.clients()
			b.clients()
			// Registration begun on A, finished on B.
			opts, sid := a.beginRegistration(credA)
			att, _, err := a.auth.CreateWith(opts, testOrigin, softauthn.CreateOptions{UserIDPlain: true})
			if err != nil {
				t.Fatal(err)
			}
			mustStatus(t, b.finishRegistration(credA, sid, attestationOf(t, att), keyHex1), http.StatusOK, "")

			opts, sid = a.beginLogin(credA)
			if got := readKey(t, b.loginRead(credA, sid, a.assert(a.auth, opts, softauthn.GetOptions{}))); got != keyHex1 {
				t.Fatalf("login begun on A, read on B: %q", got)
			}
			for _, n := range []*harness{a, b} {
				mustStatus(t, n.loginRead(credA, sid, a.assert(a.auth, opts, softauthn.GetOptions{})), http.StatusBadRequest, passkey.ErrCeremonyUnknown.Code)
			}
			// Another client cannot finish A's session on B either.
			opts, sid = a.beginLogin(credA)
			mustStatus(t, b.loginRead(credB, sid, a.assert(a.auth, opts, softauthn.GetOptions{})), http.StatusBadRequest, ErrSessionInvalid.Code)
		})
	}
}
