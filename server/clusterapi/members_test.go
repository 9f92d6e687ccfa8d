package clusterapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/cluster"
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// TestMembersRoutes runs the member routes on a real embedded member and
// a real audit log: status lists this one member; a malformed id is 400
// invalid_member_id, an unknown one 404 member_not_found, and removing
// the only member 409 last_voter — each refusal audited, as the status is.
func TestMembersRoutes(t *testing.T) {
	root, err := enclave.NewRoot(enclave.NewRootKey())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ca, err := cluster.DeriveCA(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	peer := proc.FreeAddr(t)
	m, err := cluster.StartMember(context.Background(), cluster.MemberOptions{
		Name: "n1", DataDir: cluster.EtcdDir(dir), TLSDir: cluster.TLSDir(dir),
		PeerListen: peer, PeerAdvertise: "https://" + peer, ClientListen: proc.FreeAddr(t),
		InitialCluster: "n1=https://" + peer, ClusterState: cluster.StateNew, CA: ca, StartTimeout: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	auditDir := filepath.Join(dir, "audit")
	alog, err := audit.Open(context.Background(), audit.Options{Dir: auditDir, AnchorKey: root.Subkey(enclave.SubkeyAuditAnchor), ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close(context.Background())
	h, err := NewMembers(m, alog, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		ae, ok := apierr.As(err)
		if !ok {
			ae = apierr.ErrInternal
		}
		_ = c.JSON(ae.Status, map[string]any{"error": map[string]string{"code": ae.Code}})
	}
	e.GET("/cluster", h.Status)
	e.DELETE("/cluster/members/:id", h.RemoveMember)
	call := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}

	code, body := call(http.MethodGet, "/cluster")
	var st cluster.Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.Members) != 1 || !st.Members[0].Self || !st.Members[0].Leader || st.Members[0].ID.String() != cluster.ID(m.MemberID()).String() {
		t.Fatalf("status: %d %s", code, body)
	}
	for _, c := range []struct {
		path string
		want int
		code string
	}{
		{"/cluster/members/not-hex", 400, "invalid_member_id"},
		{"/cluster/members/0", 400, "invalid_member_id"},
		{"/cluster/members/12345", 404, "member_not_found"},
		{"/cluster/members/" + st.Members[0].ID.String(), 409, "last_voter"},
	} {
		code, body := call(http.MethodDelete, c.path)
		if code != c.want || !strings.Contains(body, `"`+c.code+`"`) {
			t.Errorf("DELETE %s: %d %s; want %d %s", c.path, code, body, c.want, c.code)
		}
	}
	if st2, err := m.Status(context.Background()); err != nil || len(st2.Members) != 1 {
		t.Fatalf("the member is not there any more: %+v %v", st2, err)
	}
	var lines strings.Builder
	ents, _ := os.ReadDir(auditDir)
	for _, en := range ents {
		b, _ := os.ReadFile(filepath.Join(auditDir, en.Name()))
		lines.Write(b)
	}
	for _, want := range []string{`"action":"admin_cluster_status","outcome":"success"`, `"reason":"member_not_found"`, `"reason":"last_voter"`} {
		if !strings.Contains(lines.String(), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
}
