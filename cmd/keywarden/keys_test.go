package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestKeysVersionsRestoreCommand: `keywarden keys versions|restore` lists
// and restores prior versions of a Firebase user's key (an owner holding
// '/') on a running node through its admin API; a bad owner prints the
// server's code and message; a wrong admin key gets nothing.
func TestKeysVersionsRestoreCommand(t *testing.T) {
	dir := t.TempDir()
	const adminKey = "keys-admin-key-0123456789"
	base, stop := startDev(t, dir, "781", adminKey)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	ctx := context.Background()
	const owner = "firebase:proj-a/tenant-1/uid-7"
	admin := func(method, path string, body any) (int, []byte) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	for _, k := range []string{"first-key", "second-key"} {
		st, b := admin("POST", "/v1/admin/keys/import", map[string]any{"overwrite": true,
			"items": []any{map[string]any{"owner": owner, "method": "FIREBASE", "keyText": k}}})
		if st != 200 || bytes.Contains(b, []byte(`"code"`)) {
			t.Fatalf("import: %d %s", st, b)
		}
	}

	out := captureStdout(t, func() error { return cmdKeys(ctx, []string{"versions", "-url", base, owner, "FIREBASE"}) })
	ids := regexp.MustCompile(`(?m)^([0-9]{20})\s`).FindAllStringSubmatch(out, -1)
	if !strings.HasPrefix(out, "VERSION") || len(ids) != 1 {
		t.Fatalf("versions printed:\n%s", out)
	}
	out = captureStdout(t, func() error {
		return cmdKeys(ctx, []string{"restore", "-url", base, owner, "FIREBASE", ids[0][1]})
	})
	if !strings.Contains(out, "restored version "+ids[0][1]) || !strings.Contains(out, owner) {
		t.Fatalf("restore printed:\n%s", out)
	}
	// The value the restore replaced is a prior version now.
	out = captureStdout(t, func() error { return cmdKeys(ctx, []string{"versions", "-url", base, owner, "FIREBASE"}) })
	if n := len(regexp.MustCompile(`(?m)^[0-9]{20}\s`).FindAllString(out, -1)); n != 2 {
		t.Fatalf("versions after the restore printed:\n%s", out)
	}
	// The owner's description over the same escaped form.
	if st, b := admin("GET", "/v1/admin/owners/firebase%3Aproj-a%2Ftenant-1%2Fuid-7", nil); st != 200 || !bytes.Contains(b, []byte(`"method":"FIREBASE"`)) {
		t.Fatalf("describe: %d %s", st, b)
	}

	// A bad owner: the server's code and message.
	err := cmdKeys(ctx, []string{"versions", "-url", base, "alice", "FIREBASE"})
	if err == nil || !strings.Contains(err.Error(), "400 invalid_owner") || !strings.Contains(err.Error(), "user:<userId>") {
		t.Fatalf("bad owner: %v", err)
	}
	err = cmdKeys(ctx, []string{"restore", "-url", base, owner, "FIREBASE", "7"})
	if err == nil || !strings.Contains(err.Error(), "400 invalid_version_id") {
		t.Fatalf("bad version id: %v", err)
	}
	if err := cmdKeys(ctx, []string{"restore", "-url", base, owner, "FIREBASE"}); err == nil {
		t.Fatal("restore without an id was accepted")
	}
	t.Setenv("KEYWARDEN_ADMIN_KEY", "wrong-admin-key-0123456789")
	err = cmdKeys(ctx, []string{"versions", "-url", base, owner, "FIREBASE"})
	if err == nil || !strings.Contains(err.Error(), "401 admin_unauthorized") {
		t.Fatalf("wrong admin key: %v", err)
	}
}
