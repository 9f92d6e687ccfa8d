package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/testutil/firebasetest"
	"github.com/keywarden/keywarden/store"
)

// migrate runs `keywarden store migrate` in dev mode and returns its report.
func migrate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := cmdStoreMigrate(context.Background(), append([]string{"-dev"}, args...), &out)
	return out.String(), err
}

// checkDigests checks that the report prints one digest for each side and
// that they are equal.
func checkDigests(t *testing.T, report string) {
	t.Helper()
	m := regexp.MustCompile(`sha256 source:\s+([0-9a-f]{64})\nsha256 destination:\s+([0-9a-f]{64})`).FindStringSubmatch(report)
	if m == nil || m[1] != m[2] {
		t.Fatalf("report without two equal digests:\n%s", report)
	}
}

// TestStoreMigrateRoundTrip: a dev node's bbolt store moves into etcd with
// `store migrate -to etcd` (both sides counted and hashed alike); the node
// started on etcd releases the key stored before (the root key, the
// rollback record and its digest of the records came along: the start-up
// rollback check passes) and stores another; the store moves back with
// `-to bbolt`, which refuses the old file until -force, and the node on
// bbolt releases both keys. Run on an embedded member and on the real etcd
// server over mutual TLS.
func TestStoreMigrateRoundTrip(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		c := etcddev.Embedded(t)
		t.Setenv("KEYWARDEN_ETCD_ENDPOINTS", c.Endpoint(0))
		migrateRoundTrip(t, "3131")
	})
	t.Run("external-tls", func(t *testing.T) {
		srv, files := etcddev.External(t, etcddev.ExternalOptions{TLS: true})
		t.Setenv("KEYWARDEN_ETCD_ENDPOINTS", srv.Endpoint)
		t.Setenv("KEYWARDEN_ETCD_CA_FILE", files.CA)
		t.Setenv("KEYWARDEN_ETCD_CERT_FILE", files.ClientCert)
		t.Setenv("KEYWARDEN_ETCD_KEY_FILE", files.ClientKey)
		migrateRoundTrip(t, "3232")
	})
}

func migrateRoundTrip(t *testing.T, seed string) {
	iss := firebasetest.NewIssuer(t, "proj-migrate")
	t.Setenv("KEYWARDEN_FIREBASE_PROJECT_ID", "proj-migrate")
	t.Setenv("KEYWARDEN_FIREBASE_CERTS_URL", iss.URL())
	t.Setenv("KEYWARDEN_ETCD_PREFIX", "kw-migrate")
	t.Setenv("KEYWARDEN_STORE_BACKEND", "bbolt")
	dir := t.TempDir()
	const adminKey = "migrate-admin-key-0123456789"
	key1 := []byte("0123456789abcdef0123456789abcdef")
	key2 := []byte("fedcba9876543210fedcba9876543210")
	tok1, tok2 := iss.Mint(firebasetest.Claims{"sub": "user-one"}), iss.Mint(firebasetest.Claims{"sub": "user-two"})

	url, stop := startDev(t, dir, seed, adminKey)
	if st, code, _, _ := keyCall(t, "PUT", url, tok1, key1); st != 201 {
		t.Fatalf("store on bbolt: %d %s", st, code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The source must be on the other backend; -to is required.
	if _, err := migrate(t, "-to", "bbolt"); err == nil || !strings.Contains(err.Error(), "already on bbolt") {
		t.Fatalf("migrate to the backend the store is on: %v", err)
	}
	if _, err := migrate(t); err == nil {
		t.Fatal("migrate without -to accepted")
	}
	report, err := migrate(t, "-to", "etcd")
	if err != nil {
		t.Fatalf("migrate -to etcd: %v\n%s", err, report)
	}
	checkDigests(t, report)
	if !strings.Contains(report, "meta keys copied") || !regexp.MustCompile(`keys\s+1\s+1\n`).MatchString(report) {
		t.Fatalf("report:\n%s", report)
	}
	// Again into the same prefix: refused, nothing changed.
	if _, err := migrate(t, "-to", "etcd"); !errors.Is(err, store.ErrNotEmpty) || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("migrate into a prefix with records: %v", err)
	}

	t.Setenv("KEYWARDEN_STORE_BACKEND", "etcd")
	url, stop = startDev(t, dir, seed, adminKey)
	if st, code, got, _ := keyCall(t, "GET", url, tok1, nil); st != 200 || !bytes.Equal(got, key1) {
		t.Fatalf("release on etcd after migrate: %d %s", st, code)
	}
	if st, code, _, _ := keyCall(t, "PUT", url, tok2, key2); st != 201 {
		t.Fatalf("store on etcd: %d %s", st, code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Back to bbolt: the old file holds records.
	if _, err := migrate(t, "-to", "bbolt"); !errors.Is(err, store.ErrNotEmpty) {
		t.Fatalf("migrate back over the old file: %v", err)
	}
	report, err = migrate(t, "-to", "bbolt", "-force")
	if err != nil {
		t.Fatalf("migrate -to bbolt -force: %v\n%s", err, report)
	}
	checkDigests(t, report)
	if !strings.Contains(report, "removed from the destination first") {
		t.Fatalf("report does not say records were replaced:\n%s", report)
	}

	t.Setenv("KEYWARDEN_STORE_BACKEND", "bbolt")
	url, stop = startDev(t, dir, seed, adminKey)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	for i, c := range []struct {
		tok string
		key []byte
	}{{tok1, key1}, {tok2, key2}} {
		if st, code, got, _ := keyCall(t, "GET", url, c.tok, nil); st != 200 || !bytes.Equal(got, c.key) {
			t.Fatalf("release %d on bbolt after migrating back: %d %s", i+1, st, code)
		}
	}
}
