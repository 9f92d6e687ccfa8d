package firebase

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
)

// GET /v1/me/events answers an owner index with all its reads of the files
// taken by 503 events_busy with Retry-After (the client retries shortly),
// and any other index error by 503 events_unavailable, as before.
func TestEventsErrorBusy(t *testing.T) {
	for _, c := range []struct {
		err   error
		code  string
		retry bool
	}{
		{fmt.Errorf("lookup: %w", audit.ErrOwnerIndexBusy), "events_busy", true},
		{errors.New("read /audit/000001.log: input/output error"), "events_unavailable", false},
	} {
		ae, ok := apierr.As(eventsError(c.err))
		if !ok || ae.Status != http.StatusServiceUnavailable || ae.Code != c.code || (ae.RetryAfter > 0) != c.retry {
			t.Fatalf("%v: answered %+v, want 503 %s (Retry-After %v)", c.err, ae, c.code, c.retry)
		}
	}
}
