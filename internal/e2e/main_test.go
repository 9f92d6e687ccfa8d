package e2e

import (
	"os"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// TestMain removes the keywarden binary that the tests share (built once
// by proc.BuildBinary).
func TestMain(m *testing.M) {
	code := m.Run()
	proc.RemoveBuilds()
	os.Exit(code)
}
