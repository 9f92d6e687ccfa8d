package httpx

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/internal/apierr"
)

type strictBody struct {
	Key string `json:"key"`
}

type foreignBody struct {
	Key string `json:"key"`
}

func (*foreignBody) ForeignShape() {}

type optionalBody struct {
	Name string `json:"name"`
}

func (*optionalBody) Optional() {}

func ctx(body, ct string) echo.Context {
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	if ct != "" {
		req.Header.Set(echo.HeaderContentType, ct)
	}
	return echo.New().NewContext(req, httptest.NewRecorder())
}

func code(err error) string {
	if err == nil {
		return ""
	}
	if e, ok := apierr.As(err); ok {
		return e.Code
	}
	return err.Error()
}

func TestBindRules(t *testing.T) {
	for _, tc := range []struct {
		name, body, ct string
		v              any
		limit          int64
		want           string
	}{
		{"plain object", `{"key":"a"}`, "application/json", &strictBody{}, 0, ""},
		{"no content type", `{"key":"a"}`, "", &strictBody{}, 0, ""},
		{"form body", `key=a`, "application/x-www-form-urlencoded", &strictBody{}, 0, "unsupported_media_type"},
		{"unknown member", `{"key":"a","sealdKey":"b"}`, "", &strictBody{}, 0, "invalid_json"},
		{"unknown member of a foreign shape", `{"key":"a","newer":1}`, "", &foreignBody{}, 0, ""},
		{"empty body", ``, "application/json", &strictBody{}, 0, "invalid_json"},
		{"empty body, all optional", ` `, "application/json", &optionalBody{}, 0, ""},
		{"trailing data", `{"key":"a"}{}`, "", &strictBody{}, 0, "invalid_json"},
		{"wrong type", `{"key":5}`, "", &strictBody{}, 0, "invalid_json"},
		{"not an object", `[1]`, "", &strictBody{}, 0, "invalid_json"},
		{"over the limit", `{"key":"aaaaaaaaaa"}`, "", &strictBody{}, 8, "body_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := code(Bind(ctx(tc.body, tc.ct), tc.v, tc.limit))
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBearer(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer ": "", "abc": ""} {
		if got, ok := Bearer(h); got != want || ok != (want != "") {
			t.Errorf("Bearer(%q) = %q, %v", h, got, ok)
		}
	}
}

func TestDecodeKey(t *testing.T) {
	for s, ok := range map[string]bool{"AAEC": true, "AAECAw==": true, "AAECAw": true, "": false, "AA-_": false, "!!": false, strings.Repeat("A", 1364): true, strings.Repeat("A", 1368): false} {
		k, err := DecodeKey(s)
		if (err == nil) != ok {
			t.Errorf("DecodeKey(%.10q…) err = %v, want ok %v", s, err, ok)
		}
		if err != nil && code(err) != "invalid_key" {
			t.Errorf("code %q", code(err))
		}
		k.Wipe()
	}
}
