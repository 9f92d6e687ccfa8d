package main

import (
	"context"
	"strings"
	"testing"
)

// TestStatusCommand: `keywarden status` reads the admin readiness of the
// running server (with the admin key) and prints every check.
func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	url, stop := startDev(t, dir, "780", "status-admin-key-0123456789")
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	out := captureStdout(t, func() error { return cmdStatus(context.Background(), []string{"-url", url}) })
	if !strings.Contains(out, "status: ready") || !strings.Contains(out, "root_key") || !strings.Contains(out, "store") {
		t.Fatalf("status printed:\n%s", out)
	}
	t.Setenv("KEYWARDEN_ADMIN_KEY", "wrong-admin-key-0123456789")
	if err := cmdStatus(context.Background(), []string{"-url", url}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong admin key: %v", err)
	}
}
