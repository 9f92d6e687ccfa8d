package keys

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/metrics"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
)

func newService(t *testing.T, now func() time.Time) (*Service, *metrics.Metrics) {
	t.Helper()
	core := apptest.NewCore(t, apptest.NoTPM())
	m := metrics.New()
	s, err := New(Options{Custody: enclave.NewCustody(core.DB, core.Root, enclave.CustodyOptions{Clock: now}), Audit: core.Audit, Metrics: m, Clock: now})
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestNewNamesMissingDependency(t *testing.T) {
	if _, err := New(Options{}); err == nil || err.Error() != "keys: Options.Custody is required" {
		t.Fatalf("got %v", err)
	}
}

// A method the caller picked (the admin import takes any) never becomes a
// metrics label.
func TestStoreMethodLabelClosed(t *testing.T) {
	s, m := newService(t, time.Now)
	if _, err := s.Store(context.Background(), Request{Actor: "admin:x"}, "user:alice", "MY-OWN-METHOD", []byte("k"), enclave.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, mf := range mfs {
		if mf.GetName() == "keywarden_key_stores_total" {
			for _, x := range mf.GetMetric() {
				for _, l := range x.GetLabel() {
					labels = append(labels, l.GetValue())
				}
			}
		}
	}
	if len(labels) != 2 || labels[0] != "other" || labels[1] != "stored" {
		t.Fatalf("store series labels %v, want [other stored]", labels)
	}
}

// The sign-in age rule: an old sign-in stores where nothing is, but
// neither replaces nor deletes.
func TestSignInAgeRule(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, _ := newService(t, func() time.Time { return now })
	ctx := context.Background()
	old := Request{SignIn: &SignIn{At: now.Add(-time.Hour), MaxAge: 10 * time.Minute}}
	fresh := Request{SignIn: &SignIn{At: now, MaxAge: 10 * time.Minute}}
	if _, err := s.Store(ctx, old, "user:bob", "FIREBASE", []byte("a"), enclave.PutOptions{}); err != nil {
		t.Fatalf("first store with an old sign-in: %v", err)
	}
	if _, err := s.Store(ctx, old, "user:bob", "FIREBASE", []byte("b"), enclave.PutOptions{}); !errors.Is(err, apierr.ErrKeyExists) {
		t.Fatalf("overwrite with an old sign-in: %v", err)
	}
	if err := s.Delete(ctx, old, "user:bob", "FIREBASE", enclave.Access{}); err == nil || err.Error() != ErrReauthenticate.Error() {
		t.Fatalf("delete with an old sign-in: %v", err)
	}
	if replaced, err := s.Store(ctx, fresh, "user:bob", "FIREBASE", []byte("c"), enclave.PutOptions{}); err != nil || !replaced {
		t.Fatalf("overwrite with a fresh sign-in: %v %v", replaced, err)
	}
	if err := s.Delete(ctx, fresh, "user:bob", "FIREBASE", enclave.Access{}); err != nil {
		t.Fatal(err)
	}
	if vs, err := s.Versions(ctx, "user:bob", "FIREBASE"); err != nil || len(vs) != 2 {
		t.Fatalf("versions %v %v: the delete keeps the value", vs, err)
	}
}
