// Package apidoc serves the API document (openapi.yaml at the repository
// root) on each listener as JSON, with that listener's own paths only: a
// path's x-listener says which listener serves it (public, admin or both).
package apidoc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden"
)

// The listeners a path can belong to (its x-listener).
const (
	Public = "public"
	Admin  = "admin"
	Both   = "both"
)

// Doc is the document decoded from the embedded YAML.
type Doc map[string]any

// Load decodes the embedded openapi.yaml.
func Load() (Doc, error) {
	var d map[string]any
	if err := yaml.Unmarshal(keywarden.OpenAPIYAML, &d); err != nil {
		return nil, fmt.Errorf("apidoc: openapi.yaml: %w", err)
	}
	if _, ok := d["paths"].(map[string]any); !ok {
		return nil, fmt.Errorf("apidoc: openapi.yaml has no paths")
	}
	return d, nil
}

// Paths is the document's paths object.
func (d Doc) Paths() map[string]any { p, _ := d["paths"].(map[string]any); return p }

// ListenerOf is a path item's x-listener ("" when absent).
func ListenerOf(item any) string {
	m, _ := item.(map[string]any)
	s, _ := m["x-listener"].(string)
	return s
}

// Serves reports whether listener (Public, Admin, or Both for one listener
// that serves both tables) serves a path whose x-listener is of.
func Serves(listener, of string) bool {
	return listener == Both || of == Both || of == listener
}

// For is the document with the paths listener serves only.
func (d Doc) For(listener string) Doc {
	out := make(Doc, len(d))
	for k, v := range d {
		out[k] = v
	}
	paths := map[string]any{}
	for p, item := range d.Paths() {
		if Serves(listener, ListenerOf(item)) {
			paths[p] = item
		}
	}
	out["paths"] = paths
	return out
}

// Handler answers GET /openapi.json with the document of listener. The
// JSON is made once.
func Handler(listener string) (echo.HandlerFunc, error) {
	d, err := Load()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(d.For(listener))
	if err != nil {
		return nil, fmt.Errorf("apidoc: %w", err)
	}
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
		return c.JSONBlob(http.StatusOK, body)
	}, nil
}

// PathOf is the document's form of an echo route path: ":name" segments
// become "{name}" and a trailing "*" becomes "{path}".
func PathOf(echoPath string) string {
	segs := strings.Split(echoPath, "/")
	for i, s := range segs {
		switch {
		case strings.HasPrefix(s, ":"):
			segs[i] = "{" + s[1:] + "}"
		case s == "*":
			segs[i] = "{path}"
		}
	}
	return strings.Join(segs, "/")
}
