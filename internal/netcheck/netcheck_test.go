package netcheck

import (
	"strings"
	"testing"
)

func TestServiceURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://vault.internal:8200":    "",
		"http://127.0.0.1:8200":          "",
		"http://127.255.0.1":             "",
		"http://[::1]:8200":              "",
		"http://localhost:8200":          "",
		"http://LOCALHOST:8200":          "",
		"http://vault.internal:8200":     "loopback",
		"http://10.0.0.1":                "loopback",
		"http://0.0.0.0":                 "loopback",
		"http://[::]:8200":               "loopback",
		"http://127.0.0.1.example":       "loopback",
		"http://localhost.example":       "loopback",
		"ftp://127.0.0.1":                "not an http(s) URL",
		"127.0.0.1:8200":                 "not an http(s) URL",
		"https://":                       "not an http(s) URL",
		"http://[::ffff:127.0.0.1]:8200": "",
	} {
		err := ServiceURL(raw)
		if want == "" && err != nil {
			t.Errorf("%s refused: %v", raw, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want an error about %q", raw, err, want)
		}
	}
}
