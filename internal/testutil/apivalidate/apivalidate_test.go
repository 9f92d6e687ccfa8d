package apivalidate

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestDocumentLoads(t *testing.T) {
	if _, err := Default(); err != nil {
		t.Fatal(err)
	}
}

// TestTransportReports: the round-tripper reports an answer the document
// does not describe and passes the answer on unchanged; a documented one
// is not reported, nor one without X-Request-Id (not the appliance's: a
// load balancer's, or Go's HTTP server refusing before any handler).
func TestTransportReports(t *testing.T) {
	v, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"status":"ok"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if body != "no id" {
			w.Header().Set("X-Request-Id", "r1")
		}
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		answer string
		report bool
	}{{`{"status":"ok"}`, false}, {`{"status":"ok","uptime":3}`, true}, {`{"status":"fine"}`, true}, {"no id", false}} {
		body = tc.answer
		var got []string
		c := &http.Client{Transport: v.Transport(nil, func(f string, a ...any) { got = append(got, fmt.Sprintf(f, a...)) })}
		resp, err := c.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.answer {
			t.Fatalf("the body was changed: %s", b)
		}
		if (len(got) > 0) != tc.report {
			t.Fatalf("%s: reports %v, want a report: %v", tc.answer, got, tc.report)
		}
	}
}
