package audit_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/server/keys"
)

// TestStoreCommitsWhileAuditLineSyncs: keys.Service.Store overlaps its
// audit line's fsync with its record's commit. With the audit log's
// background fsync held off, N concurrent stores all commit their records
// (their lines are written, no audit fsync has run), yet none is
// answered; once the fsync may run, all are answered, their lines made
// durable by a few shared fsyncs. Before, each store waited for its
// line's fsync before committing: a record was never committed while no
// audit fsync had run.
func TestStoreCommitsWhileAuditLineSyncs(t *testing.T) {
	const n = 8
	core := apptest.NewCore(t, apptest.NoTPM())
	custody := enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{})
	s, err := keys.New(keys.Options{Custody: custody, Audit: core.Audit, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	release, err := audit.HoldSyncer(core.Audit)
	if err != nil {
		t.Fatal(err)
	}
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	before := core.Audit.Stats()
	done := make(chan error, n)
	owner := func(i int) enclave.Owner { return enclave.Owner(fmt.Sprintf("firebase:proj-a//user-%d", i)) }
	for i := range n {
		go func() {
			_, err := s.Store(ctx, keys.Request{Actor: "firebase:x"}, owner(i), "FIREBASE", []byte("0123456789abcdef0123456789abcdef"), enclave.PutOptions{})
			done <- err
		}()
	}
	// Wait until every record is committed, or a store answered.
	answered := 0
	for committed := 0; committed < n && answered == 0; runtime.Gosched() {
		committed = 0
		for i := range n {
			if ok, err := custody.HasKey(ctx, owner(i), "FIREBASE"); err != nil {
				t.Fatal(err)
			} else if ok {
				committed++
			}
		}
		select {
		case err := <-done:
			answered++
			t.Errorf("a store was answered (%v) while the background audit fsync was held", err)
		default:
		}
	}
	if answered > 0 {
		return
	}
	if st := core.Audit.Stats(); st.Fsyncs != before.Fsyncs {
		t.Fatalf("audit fsyncs %d → %d before the records were committed", before.Fsyncs, st.Fsyncs)
	}
	held = false
	release()
	for range n {
		if err := <-done; err != nil {
			t.Fatalf("store: %v", err)
		}
	}
	st := core.Audit.Stats()
	if st.Fsyncs == before.Fsyncs || st.Fsyncs-before.Fsyncs >= n {
		t.Fatalf("audit fsyncs %d → %d for %d stores: want their lines made durable by fewer fsyncs than stores", before.Fsyncs, st.Fsyncs, n)
	}
	t.Logf("%d stores: all committed with no audit fsync run; then %d audit fsync(s) made their lines durable", n, st.Fsyncs-before.Fsyncs)
}

// TestStoreAuditFsyncFailsAfterCommit: the store's audit line is written,
// its record committed, then the line's fsync fails (for real). The store
// is not acknowledged: 503 audit_unavailable; the record stays (nothing
// was disclosed) and storing again succeeds, as an overwrite.
func TestStoreAuditFsyncFailsAfterCommit(t *testing.T) {
	core := apptest.NewCore(t, apptest.NoTPM())
	custody := enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{})
	s, err := keys.New(keys.Options{Custody: custody, Audit: core.Audit, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const owner, method = enclave.Owner("firebase:proj-a//user-1"), "FIREBASE"
	key := []byte("0123456789abcdef0123456789abcdef")
	stop, err := audit.BreakSync(core.Audit)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	_, err = s.Store(ctx, keys.Request{Actor: "firebase:x"}, owner, method, key, enclave.PutOptions{})
	ae, ok := apierr.As(err)
	if !ok || ae.Status != http.StatusServiceUnavailable || ae.Code != "audit_unavailable" || !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("store whose audit fsync failed = %v, want 503 audit_unavailable", err)
	}
	if core.Audit.Healthy() {
		t.Fatal("audit log healthy after a failed fsync")
	}
	if ok, err := custody.HasKey(ctx, owner, method); err != nil || !ok {
		t.Fatalf("record after the unacknowledged store: %v %v, want it kept", ok, err)
	}
	replaced, err := s.Store(ctx, keys.Request{Actor: "firebase:x"}, owner, method, key, enclave.PutOptions{})
	if err != nil || !replaced {
		t.Fatalf("retried store = %v (replaced %v), want an overwrite", err, replaced)
	}
	if !core.Audit.Healthy() {
		t.Fatal(core.Audit.LastError())
	}
	if err := core.Audit.Anchor(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(core.AuditDir, core.Root.Subkey(enclave.SubkeyAuditAnchor))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(rep.Incidents) != 1 || rep.Incidents[0].Action != audit.ActionFsyncFailed {
		t.Fatalf("incidents %+v, want the failed fsync", rep.Incidents)
	}
}

// TestStoreAuditWriteFailureCommitsNothing: a store whose audit line
// cannot be written (the audit file was deleted) is refused with 503
// audit_unavailable and nothing is committed.
func TestStoreAuditWriteFailureCommitsNothing(t *testing.T) {
	core := apptest.NewCore(t, apptest.NoTPM())
	custody := enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{})
	s, err := keys.New(keys.Options{Custody: custody, Audit: core.Audit, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const owner, method = enclave.Owner("firebase:proj-a//user-1"), "FIREBASE"
	if err := core.Audit.Anchor(ctx); err != nil { // the file exists
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(core.AuditDir, core.Audit.Stats().File)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Store(ctx, keys.Request{Actor: "firebase:x"}, owner, method, []byte("0123456789abcdef0123456789abcdef"), enclave.PutOptions{})
	ae, ok := apierr.As(err)
	if !ok || ae.Status != http.StatusServiceUnavailable || ae.Code != "audit_unavailable" || !errors.Is(err, audit.ErrFileRemoved) {
		t.Fatalf("store whose audit line cannot be written = %v, want 503 audit_unavailable", err)
	}
	if ok, err := custody.HasKey(ctx, owner, method); err != nil || ok {
		t.Fatalf("record after a refused store: %v %v, want none", ok, err)
	}
}
