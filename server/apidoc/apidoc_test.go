package apidoc

import "testing"

func TestPathOf(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/firebase/key": "/v1/firebase/key",
		"/v1/admin/users/:userId/passkeys/:credentialId": "/v1/admin/users/{userId}/passkeys/{credentialId}",
		"/demo/*": "/demo/{path}",
	} {
		if got := PathOf(in); got != want {
			t.Errorf("PathOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFor: each listener's document holds its own paths and the shared
// ones; one listener serving both holds every path.
func TestFor(t *testing.T) {
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	all := len(d.Paths())
	pub, adm := d.For(Public).Paths(), d.For(Admin).Paths()
	if _, ok := pub["/v1/admin/backup"]; ok {
		t.Error("the public document has an admin path")
	}
	if _, ok := adm["/v1/firebase/key"]; ok {
		t.Error("the admin document has a public path")
	}
	for _, p := range []string{"/healthz", "/openapi.json"} {
		if pub[p] == nil || adm[p] == nil {
			t.Errorf("%s is not in both documents", p)
		}
	}
	if len(pub)+len(adm) <= all || len(d.For(Both).Paths()) != all || len(d.Paths()) != all {
		t.Errorf("paths: public %d, admin %d, all %d", len(pub), len(adm), all)
	}
}
