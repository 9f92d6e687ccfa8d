package passkey

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/ratelimit"
)

func TestOptionsValidate(t *testing.T) {
	if err := testOptions().Validate(); err != nil {
		t.Fatalf("good options: %v", err)
	}
	dev := Options{RelyingParties: []RelyingParty{{ID: "localhost", Origins: []string{"http://localhost:8420"}}}}
	if err := dev.Validate(); err != nil {
		t.Fatalf("dev options: %v", err)
	}
	direct := Options{RelyingParties: []RelyingParty{{ID: "example.com", Origins: []string{"android:apk-key-hash:q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k"}}}}
	if err := direct.Validate(); err != nil {
		t.Fatalf("android origin given directly: %v", err)
	}
	androidOnly := Options{RelyingParties: []RelyingParty{{ID: "example.com", AndroidApps: []AndroidApp{{Package: "com.example.app", Fingerprints: []string{testFP}}}}}}
	if err := androidOnly.Validate(); err != nil {
		t.Fatalf("android-only options: %v", err)
	}
	bad := map[string]struct {
		field string
		mod   func(*Options)
	}{
		"no RP":                {"relyingParties", func(o *Options) { o.RelyingParties = nil }},
		"empty RP ID":          {"relyingParties[0].id", func(o *Options) { o.RelyingParties[0].ID = "" }},
		"RP ID with scheme":    {"relyingParties[0].id", func(o *Options) { o.RelyingParties[0].ID = "https://example.com" }},
		"RP ID with port":      {"relyingParties[0].id", func(o *Options) { o.RelyingParties[0].ID = "example.com:443" }},
		"RP ID an IP":          {"relyingParties[0].id", func(o *Options) { o.RelyingParties[0].ID = "10.0.0.1" }},
		"RP ID upper case":     {"relyingParties[0].id", func(o *Options) { o.RelyingParties[0].ID = "Example.com" }},
		"duplicate RP":         {"relyingParties[1].id", func(o *Options) { o.RelyingParties = append(o.RelyingParties, o.RelyingParties[0]) }},
		"no origins":           {"relyingParties[0].origins", func(o *Options) { o.RelyingParties[0].Origins = nil; o.RelyingParties[0].AndroidApps = nil }},
		"origin with path":     {"relyingParties[0].origins[0]", func(o *Options) { o.RelyingParties[0].Origins[0] = "https://app.example.com/login" }},
		"origin of other site": {"relyingParties[0].origins[0]", func(o *Options) { o.RelyingParties[0].Origins[0] = "https://example.org" }},
		"origin suffix trick":  {"relyingParties[0].origins[0]", func(o *Options) { o.RelyingParties[0].Origins[0] = "https://evilexample.com" }},
		"plain http":           {"relyingParties[0].origins[0]", func(o *Options) { o.RelyingParties[0].Origins[0] = "http://app.example.com" }},
		"short android origin": {"relyingParties[0].origins[0]", func(o *Options) { o.RelyingParties[0].Origins[0] = "android:apk-key-hash:abc" }},
		"other android origin": {"relyingParties[0].origins[0]", func(o *Options) { o.RelyingParties[0].Origins[0] = "android:facet:abc" }},
		"bad package":          {"relyingParties[0].androidApps[0].package", func(o *Options) { o.RelyingParties[0].AndroidApps[0].Package = "nodots" }},
		"no fingerprints":      {"relyingParties[0].androidApps[0].fingerprints", func(o *Options) { o.RelyingParties[0].AndroidApps[0].Fingerprints = nil }},
		"short fingerprint":    {"relyingParties[0].androidApps[0].fingerprints[0]", func(o *Options) { o.RelyingParties[0].AndroidApps[0].Fingerprints = []string{"AB:CD"} }},
		"sha1 fingerprint": {"relyingParties[0].androidApps[0].fingerprints[0]", func(o *Options) {
			o.RelyingParties[0].AndroidApps[0].Fingerprints = []string{"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"}
		}},
		"bad apple id": {"relyingParties[0].appleAppIds[0]", func(o *Options) { o.RelyingParties[0].AppleAppIDs = []string{"com.example.app"} }},
		"bad UV":       {"userVerification", func(o *Options) { o.UserVerification = "always" }},
		"bad RK":       {"residentKey", func(o *Options) { o.ResidentKey = "yes" }},
		"TTL too long": {"ceremonyTTL", func(o *Options) { o.CeremonyTTL = 2 * time.Hour }},
		"negative cap": {"maxCeremonies", func(o *Options) { o.MaxCeremonies = -1 }},
		"per-address over global": {"maxCeremoniesPerAddress", func(o *Options) {
			o.MaxCeremonies, o.MaxCeremoniesPerAddress = 10, 20
		}},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			o := testOptions()
			o.RelyingParties[0].Origins = append([]string(nil), o.RelyingParties[0].Origins...)
			o.RelyingParties[0].AndroidApps = append([]AndroidApp(nil), o.RelyingParties[0].AndroidApps...)
			tc.mod(&o)
			before := fmt.Sprintf("%+v", o)
			err := o.Validate()
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("err = %v, want one naming %s", err, tc.field)
			}
			if fmt.Sprintf("%+v", o) != before {
				t.Fatal("Validate changed the options")
			}
		})
	}
}

func TestParseFingerprint(t *testing.T) {
	want, _ := ParseFingerprint(testFP)
	if len(want) != 32 || want[0] != 0xab {
		t.Fatalf("colon-hex: %x", want)
	}
	for name, s := range map[string]string{
		"lower colon-hex": strings.ToLower(testFP),
		"plain hex":       strings.ReplaceAll(testFP, ":", ""),
		"base64url":       "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k",
		"padded base64":   "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=",
		"spaces":          "  " + testFP + "\n",
	} {
		got, err := ParseFingerprint(s)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %x %v", name, got, err)
		}
	}
	for _, s := range []string{"", "AB:CD", "zz" + strings.Repeat("0", 62), "q83vASNFZ4mrze8BI0VniavN7wEjRWeJ", testFP + ":00"} {
		if _, err := ParseFingerprint(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if got := AndroidOrigin(want); got != "android:apk-key-hash:q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k" {
		t.Fatalf("origin %s", got)
	}
}

func ExampleAndroidOrigin() {
	fp, _ := ParseFingerprint("AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89")
	fmt.Println(AndroidOrigin(fp))
	// Output: android:apk-key-hash:q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k
}

// The limiter itself is tested in internal/ratelimit; passkey rounds its
// waits to whole seconds.
func TestCheckLimitRounds(t *testing.T) {
	now := time.Unix(0, 0)
	l := ratelimit.New(1, 10*time.Second, 3)
	l.Spend("a", now)
	for _, tc := range []struct {
		at   time.Duration
		wait time.Duration
	}{{0, 10 * time.Second}, {1400 * time.Millisecond, 9 * time.Second}, {1600 * time.Millisecond, 9 * time.Second}, {2000 * time.Millisecond, 8 * time.Second}, {9800 * time.Millisecond, time.Second}} {
		if ok, wait := checkLimit(l, "a", now.Add(tc.at)); ok || wait != tc.wait {
			t.Fatalf("at +%s: %v %s, want refused for %s", tc.at, ok, wait, tc.wait)
		}
	}
	if ok, _ := checkLimit(l, "a", now.Add(10*time.Second)); !ok {
		t.Fatal("not refilled after an interval")
	}
	if ok, wait := checkLimit(nil, "a", now); !ok || wait != 0 {
		t.Fatal("disabled limiter refused")
	}
}
