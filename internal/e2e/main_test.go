package e2e

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/apivalidate"
	"github.com/keywarden/keywarden/internal/testutil/proc"
)

// wire collects what the end-to-end tests' HTTP clients (opsClient,
// portalHTTP, clusterHTTP, clusterLoadHTTP) saw that openapi.yaml does not describe (apivalidate).
var wire struct {
	sync.Mutex
	problems []string
}

func wireReport(format string, args ...any) {
	wire.Lock()
	defer wire.Unlock()
	wire.problems = append(wire.problems, fmt.Sprintf(format, args...))
}

// TestMain checks every exchange of the end-to-end HTTP clients against
// openapi.yaml and fails the run on one it does not describe, then removes
// the keywarden binary that the tests share (built once by
// proc.BuildBinary).
func TestMain(m *testing.M) {
	v, err := apivalidate.Default()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	opsClient.Transport = v.Transport(opsClient.Transport, wireReport)
	portalHTTP.Transport = v.Transport(portalHTTP.Transport, wireReport)
	clusterHTTP.Transport = v.Transport(clusterHTTP.Transport, wireReport)
	clusterLoadHTTP.Transport = v.Transport(clusterLoadHTTP.Transport, wireReport)
	code := m.Run()
	proc.RemoveBuilds()
	wire.Lock()
	for _, p := range wire.problems {
		fmt.Fprintln(os.Stderr, "FAIL:", p)
	}
	if len(wire.problems) > 0 && code == 0 {
		code = 1
	}
	wire.Unlock()
	os.Exit(code)
}
