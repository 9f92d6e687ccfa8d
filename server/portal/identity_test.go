package portal

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
)

func newTestResolver(t *testing.T, api *portalAPI, mod func(*Options)) (*Resolver, *firebasetest.Clock) {
	t.Helper()
	clk := firebasetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	o := Options{APIURL: api.url(), CustodianID: testCustodian}
	if mod != nil {
		mod(&o)
	}
	r, err := NewResolver(o, slog.New(slog.NewTextHandler(io.Discard, nil)), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return r, clk
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	e, ok := apierr.As(err)
	if !ok || e.Code != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
}

func TestPortalResolverCachesAnswers(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	r, _ := newTestResolver(t, api, nil)
	ctx := context.Background()
	for i := range 20 {
		c, err := r.Resolve(ctx, "key-a", "192.0.2.1", "")
		if err != nil {
			t.Fatalf("resolve %d: %v", i, err)
		}
		if c.ID != "client-a" || c.CustodianID != testCustodian {
			t.Fatalf("got %+v", c)
		}
	}
	if n := api.calls.Load(); n != 1 {
		t.Fatalf("20 resolves cost %d Portal calls, want 1", n)
	}
	if st := r.Stats(); st.Hits != 19 || st.Lookups != 1 || st.Entries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPortalResolverExpiresAfterTTL(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	r, clk := newTestResolver(t, api, func(o *Options) { o.IdentityTTL = time.Minute })
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	clk.Advance(59 * time.Second)
	if _, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	if n := api.calls.Load(); n != 1 {
		t.Fatalf("%d calls within the TTL, want 1", n)
	}
	clk.Advance(2 * time.Second)
	if _, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	if n := api.calls.Load(); n != 2 {
		t.Fatalf("%d calls after the TTL, want 2", n)
	}
}

func TestPortalResolverRefusals(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-other", "client-o", "custodian-other")
	tests := []struct {
		name   string
		cred   string
		status int // stand-in's status for every call (0: normal)
		code   string
		cached bool // a second resolve costs no call
	}{
		{"unknown credential (401)", "key-nobody", 0, ErrCredentialUnknown.Code, true},
		{"forbidden at Portal (403)", "key-x", http.StatusForbidden, ErrCredentialUnknown.Code, true},
		{"client of another custodian", "key-other", 0, ErrOtherCustodian.Code, true},
		{"Portal 500", "key-y", http.StatusInternalServerError, ErrPortalUnavailable.Code, false},
		{"Portal 502", "key-y", http.StatusBadGateway, ErrPortalUnavailable.Code, false},
		{"Portal 429", "key-y", http.StatusTooManyRequests, ErrPortalUnavailable.Code, false},
		{"Portal 404", "key-y", http.StatusNotFound, ErrCredentialUnknown.Code, false},
		{"Portal 400", "key-y", http.StatusBadRequest, ErrCredentialUnknown.Code, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api.setStatus(tc.status)
			defer api.setStatus(0)
			r, _ := newTestResolver(t, api, nil)
			before := api.calls.Load()
			_, err := r.Resolve(context.Background(), tc.cred, "192.0.2.1", "")
			wantCode(t, err, tc.code)
			e, _ := apierr.As(err)
			if e.Code == ErrPortalUnavailable.Code && e.RetryAfter <= 0 {
				t.Fatal("a 503 without Retry-After")
			}
			_, err = r.Resolve(context.Background(), tc.cred, "192.0.2.1", "")
			wantCode(t, err, tc.code)
			calls := api.calls.Load() - before
			if tc.cached && calls != 1 || !tc.cached && calls != 2 {
				t.Fatalf("two resolves cost %d calls (cached=%v)", calls, tc.cached)
			}
		})
	}
}

func TestPortalResolverFailureTTL(t *testing.T) {
	api := newPortalAPI(t)
	r, clk := newTestResolver(t, api, func(o *Options) { o.FailureTTL = 10 * time.Second })
	ctx := context.Background()
	_, err := r.Resolve(ctx, "key-late", "192.0.2.1", "")
	wantCode(t, err, ErrCredentialUnknown.Code)
	api.add("key-late", "client-late", testCustodian) // provisioned at Portal just after
	_, err = r.Resolve(ctx, "key-late", "192.0.2.1", "")
	wantCode(t, err, ErrCredentialUnknown.Code) // still cached
	clk.Advance(11 * time.Second)
	c, err := r.Resolve(ctx, "key-late", "192.0.2.1", "")
	if err != nil || c.ID != "client-late" {
		t.Fatalf("after the failure TTL: %+v %v", c, err)
	}
}

func TestPortalResolverPortalDown(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	api.add("key-b", "client-b", testCustodian)
	r, clk := newTestResolver(t, api, func(o *Options) { o.IdentityTTL = time.Minute; o.StaleIfError = 10 * time.Minute })
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	api.srv.Close() // unreachable from now on
	for range 5 {
		if c, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil || c.ID != "client-a" {
			t.Fatalf("cached credential while Portal is down: %+v %v", c, err)
		}
	}
	_, err := r.Resolve(ctx, "key-b", "192.0.2.1", "")
	wantCode(t, err, ErrPortalUnavailable.Code)

	clk.Advance(5 * time.Minute) // past the TTL, within StaleIfError
	if c, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil || c.ID != "client-a" {
		t.Fatalf("stale entry while Portal is down: %+v %v", c, err)
	}
	if st := r.Stats(); st.Stale == 0 || st.LastError == "" {
		t.Fatalf("stats %+v", st)
	}
	clk.Advance(10 * time.Minute) // past StaleIfError
	_, err = r.Resolve(ctx, "key-a", "192.0.2.1", "")
	wantCode(t, err, ErrPortalUnavailable.Code)
}

func TestPortalResolverStaleDisabled(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	r, clk := newTestResolver(t, api, func(o *Options) { o.IdentityTTL = time.Minute; o.StaleIfError = -1 })
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "key-a", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	api.setStatus(http.StatusServiceUnavailable)
	clk.Advance(2 * time.Minute)
	_, err := r.Resolve(ctx, "key-a", "192.0.2.1", "")
	wantCode(t, err, ErrPortalUnavailable.Code)
}

func TestPortalResolverSingleflight(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	release := api.hold(t)
	r, _ := newTestResolver(t, api, func(o *Options) { o.LookupTimeout = 30 * time.Second })
	const n = 40
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	var failed atomic.Int64
	for range n {
		go func() {
			defer done.Done()
			ready.Done()
			if c, err := r.Resolve(context.Background(), "key-a", "192.0.2.1", ""); err != nil || c.ID != "client-a" {
				failed.Add(1)
			}
		}()
	}
	ready.Wait()
	for api.calls.Load() == 0 { // the first look-up is at the stand-in
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join it
	release()
	done.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d resolves failed", failed.Load())
	}
	if c := api.calls.Load(); c > 2 {
		t.Fatalf("%d concurrent resolves of one credential cost %d calls", n, c)
	}
}

func TestPortalResolverGlobalCap(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	api.add("key-b", "client-b", testCustodian)
	release := api.hold(t)
	r, _ := newTestResolver(t, api, func(o *Options) { o.MaxConcurrentLookups = 1; o.LookupTimeout = 4 * time.Second })
	first := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), "key-a", "192.0.2.1", "")
		first <- err
	}()
	for api.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The only slot is taken: a look-up of another credential gets 503.
	_, err := r.Resolve(context.Background(), "key-b", "192.0.2.2", "")
	wantCode(t, err, ErrPortalUnavailable.Code)
	if r.Stats().Busy != 1 {
		t.Fatalf("stats %+v", r.Stats())
	}
	release()
	<-first
	if api.calls.Load() != 1 {
		t.Fatalf("%d calls: the refused look-up reached Portal", api.calls.Load())
	}
}

func TestPortalResolverMissLimitPerAddress(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-good", "client-g", testCustodian)
	r, clk := newTestResolver(t, api, func(o *Options) { o.MissBurst = 3; o.MissInterval = 10 * time.Second })
	ctx := context.Background()
	for i := range 3 {
		_, err := r.Resolve(ctx, "made-up-"+string(rune('a'+i)), "203.0.113.9", "")
		wantCode(t, err, ErrCredentialUnknown.Code)
	}
	_, err := r.Resolve(ctx, "made-up-z", "203.0.113.9", "")
	wantCode(t, err, apierr.ErrRateLimited.Code)
	if e, _ := apierr.As(err); e.RetryAfter < time.Second {
		t.Fatalf("Retry-After %s", e.RetryAfter)
	}
	if api.calls.Load() != 3 {
		t.Fatalf("%d calls; the limited miss reached Portal", api.calls.Load())
	}
	// Another address is not limited; a cached credential is never limited.
	if _, err := r.Resolve(ctx, "key-good", "203.0.113.10", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, "key-good", "203.0.113.9", ""); err != nil {
		t.Fatalf("cached credential from a limited address: %v", err)
	}
	clk.Advance(10 * time.Second)
	_, err = r.Resolve(ctx, "made-up-y", "203.0.113.9", "")
	wantCode(t, err, ErrCredentialUnknown.Code)
}

// TestPortalResolverMissLimitPerIPv6Network: misses from addresses that
// rotate inside one /64 share one bucket; the mapped form of an IPv4
// address is that address.
func TestPortalResolverMissLimitPerIPv6Network(t *testing.T) {
	api := newPortalAPI(t)
	r, _ := newTestResolver(t, api, func(o *Options) { o.MissBurst = 2; o.MissInterval = time.Minute })
	ctx := context.Background()
	for i, a := range []string{"2001:db8:5:5::1", "2001:db8:5:5:aaaa::2"} {
		_, err := r.Resolve(ctx, "made-up-"+string(rune('a'+i)), a, "")
		wantCode(t, err, ErrCredentialUnknown.Code)
	}
	_, err := r.Resolve(ctx, "made-up-z", "2001:db8:5:5:ffff:ffff:ffff:ffff", "")
	wantCode(t, err, apierr.ErrRateLimited.Code)
	_, err = r.Resolve(ctx, "made-up-y", "2001:db8:5:6::1", "")
	wantCode(t, err, ErrCredentialUnknown.Code)

	for i := range 2 {
		_, err := r.Resolve(ctx, "made-up-4"+string(rune('a'+i)), "192.0.2.4", "")
		wantCode(t, err, ErrCredentialUnknown.Code)
	}
	_, err = r.Resolve(ctx, "made-up-4z", "::ffff:192.0.2.4", "")
	wantCode(t, err, apierr.ErrRateLimited.Code)
}

func TestPortalResolverBoundedCache(t *testing.T) {
	api := newPortalAPI(t)
	for _, k := range []string{"k1", "k2", "k3"} {
		api.add(k, "client-"+k, testCustodian)
	}
	r, _ := newTestResolver(t, api, func(o *Options) { o.MaxIdentities = 2 })
	ctx := context.Background()
	for _, k := range []string{"k1", "k2", "k3"} {
		if _, err := r.Resolve(ctx, k, "192.0.2.1", ""); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.Stats(); st.Entries != 2 {
		t.Fatalf("entries %d", st.Entries)
	}
	if _, err := r.Resolve(ctx, "k1", "192.0.2.1", ""); err != nil { // evicted: a call
		t.Fatal(err)
	}
	if api.calls.Load() != 4 {
		t.Fatalf("%d calls", api.calls.Load())
	}
	if n := r.Flush(); n != 2 {
		t.Fatalf("flushed %d", n)
	}
}

func TestPortalResolverShapeCheckedFirst(t *testing.T) {
	api := newPortalAPI(t)
	r, _ := newTestResolver(t, api, nil)
	for _, cred := range []string{"", "has space", "tab\there", "nul\x00", "é-accent", strings.Repeat("a", MaxCredentialBytes+1)} {
		_, err := r.Resolve(context.Background(), cred, "192.0.2.1", "")
		if e, ok := apierr.As(err); !ok || e.Status != http.StatusUnauthorized {
			t.Fatalf("%q: %v", cred, err)
		}
	}
	if api.calls.Load() != 0 {
		t.Fatalf("malformed credentials cost %d Portal calls", api.calls.Load())
	}
}

func TestPortalResolverNeverFollowsRedirects(t *testing.T) {
	var leaked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
		w.Write([]byte(`{"id":"evil","custodian":{"id":"` + testCustodian + `"}}`))
	}))
	t.Cleanup(other.Close)
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+ClientsMePath, http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	r, err := NewResolver(Options{APIURL: redirect.URL, CustodianID: testCustodian}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Resolve(context.Background(), "key-a", "192.0.2.1", "")
	wantCode(t, err, ErrCredentialUnknown.Code)
	if leaked.Load() {
		t.Fatal("the credential followed a redirect")
	}
}

func TestPortalResolverForwardsTraceID(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("X-Portal-Trace-Id") + "|" + r.Header.Get("Authorization"))
		w.Write([]byte(`{"id":"client-t","custodian":{"id":"` + testCustodian + `"}}`))
	}))
	t.Cleanup(srv.Close)
	r, err := NewResolver(Options{APIURL: srv.URL, CustodianID: testCustodian}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(context.Background(), "key-t", "192.0.2.1", "trace-123"); err != nil {
		t.Fatal(err)
	}
	if got.Load() != "trace-123|Bearer key-t" {
		t.Fatalf("got %v", got.Load())
	}
}

func TestPortalResolverCallerCancelled(t *testing.T) {
	api := newPortalAPI(t)
	api.add("key-a", "client-a", testCustodian)
	release := api.hold(t)
	r, _ := newTestResolver(t, api, func(o *Options) { o.LookupTimeout = 30 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, "key-a", "192.0.2.1", "")
		errc <- err
	}()
	for api.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, ErrPortalUnavailable) {
		t.Fatalf("cancelled caller: %v", err)
	}
	// The shared look-up went on without the caller: its answer is cached.
	release()
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Entries == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := r.Resolve(context.Background(), "key-a", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	if api.calls.Load() != 1 {
		t.Fatalf("%d calls", api.calls.Load())
	}
}

func TestPortalParseClient(t *testing.T) {
	tests := []struct {
		name, body, id, custodian string
		ok                        bool
	}{
		{"full answer", `{"id":"cl1","custodian":{"id":"cu1","name":"A"},"wallets":[],"metadata":{}}`, "cl1", "cu1", true},
		{"minimal", `{"id":"cl1","custodian":{"id":"cu1"}}`, "cl1", "cu1", true},
		{"no id", `{"custodian":{"id":"cu1"}}`, "", "", false},
		{"empty id", `{"id":"","custodian":{"id":"cu1"}}`, "", "", false},
		{"id with space", `{"id":"a b","custodian":{"id":"cu1"}}`, "", "", false},
		{"id too long", `{"id":"` + strings.Repeat("x", MaxClientIDBytes+1) + `","custodian":{"id":"cu1"}}`, "", "", false},
		{"id not a string", `{"id":7,"custodian":{"id":"cu1"}}`, "", "", false},
		{"no custodian", `{"id":"cl1"}`, "", "", false},
		{"custodian null", `{"id":"cl1","custodian":null}`, "", "", false},
		{"array", `[{"id":"cl1","custodian":{"id":"cu1"}}]`, "", "", false},
		{"trailing data", `{"id":"cl1","custodian":{"id":"cu1"}} {}`, "", "", false},
		{"not JSON", `<html>`, "", "", false},
		{"empty", ``, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseClient([]byte(tc.body))
			if tc.ok != (err == nil) {
				t.Fatalf("err %v", err)
			}
			if tc.ok && (c.ID != tc.id || c.CustodianID != tc.custodian) {
				t.Fatalf("got %+v", c)
			}
			if !tc.ok {
				wantCode(t, err, ErrPortalBadAnswer.Code)
			}
		})
	}
}

func TestPortalOptionsValidate(t *testing.T) {
	good := Options{CustodianID: "cu"}
	tests := []struct {
		name string
		mod  func(*Options)
		ok   bool
	}{
		{"defaults", func(*Options) {}, true},
		{"no custodian", func(o *Options) { o.CustodianID = "" }, false},
		{"custodian padded", func(o *Options) { o.CustodianID = "cu\n" }, false},
		{"http to loopback", func(o *Options) { o.APIURL = "http://127.0.0.1:9" }, true},
		{"http elsewhere", func(o *Options) { o.APIURL = "http://api.portalhq.io" }, false},
		{"ftp", func(o *Options) { o.APIURL = "ftp://x" }, false},
		{"short secret", func(o *Options) { o.WebhookSecrets = []secret.String{secret.NewString("short")} }, false},
		{"bad allowed ip", func(o *Options) { o.WebhookAllowedIPs = []string{"10.0.0.0/33"} }, false},
		{"good allowed ips", func(o *Options) { o.WebhookAllowedIPs = []string{"10.0.0.0/8", "2001:db8::1"} }, true},
		{"webhook timeout too long", func(o *Options) { o.WebhookTimeout = 10 * time.Second }, false},
		{"negative ttl", func(o *Options) { o.IdentityTTL = -1 }, false},
		{"ttl too long", func(o *Options) { o.IdentityTTL = 48 * time.Hour }, false},
		{"negative cap", func(o *Options) { o.MaxConcurrentLookups = -1 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mod(&o)
			err := o.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("err %v", err)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("%v does not wrap ErrInvalidOptions", err)
			}
		})
	}
}
