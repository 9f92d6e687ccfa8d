package config

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keywarden/keywarden/internal/secret"
)

var (
	secretType      = reflect.TypeOf(secret.String{})
	secretSliceType = reflect.TypeOf([]secret.String{})
	durationType    = reflect.TypeOf(time.Duration(0))
)

// field is one setting: its dotted path, its environment names and where
// it lives in a Config.
type field struct {
	path  string   // "vault.addr"
	env   []string // KEYWARDEN_VAULT_ADDR, aliases
	index []int
	typ   reflect.Type
}

func (f field) secret() bool { return f.typ == secretType || f.typ == secretSliceType }

// fields lists every setting of Config in declaration order.
func fields() []field {
	var out []field
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		sec := ct.Field(i)
		name := sec.Tag.Get("key")
		if name == "" || name == "-" || sec.Type.Kind() != reflect.Struct {
			continue
		}
		for j := range sec.Type.NumField() {
			f := sec.Type.Field(j)
			key := f.Tag.Get("key")
			if key == "" || key == "-" {
				continue
			}
			path := name + "." + key
			env := []string{"KEYWARDEN_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))}
			if a := f.Tag.Get("alias"); a != "" {
				env = append(env, a)
			}
			out = append(out, field{path: path, env: env, index: []int{i, j}, typ: f.Type})
		}
	}
	return out
}

// set parses raw (one value, or a list) into the field.
func (f field) set(c *Config, raw []string, isList bool) error {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	one := func() (string, error) {
		if isList && len(raw) != 1 {
			return "", fmt.Errorf("%s: expected one value, got a list", f.path)
		}
		if len(raw) == 0 {
			return "", nil
		}
		return strings.TrimSpace(raw[0]), nil
	}
	switch {
	case f.typ == secretType:
		s, err := one()
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(secret.NewString(s)))
	case f.typ == secretSliceType:
		list := make([]secret.String, 0, len(raw))
		for _, r := range splitList(raw, isList) {
			list = append(list, secret.NewString(r))
		}
		v.Set(reflect.ValueOf(list))
	case f.typ == durationType:
		s, err := one()
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration (like 30s, 5m, 24h)", f.path, s)
		}
		v.SetInt(int64(d))
	case f.typ.Kind() == reflect.String:
		s, err := one()
		if err != nil {
			return err
		}
		v.SetString(s)
	case f.typ.Kind() == reflect.Bool:
		s, err := one()
		if err != nil {
			return err
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", f.path, s)
		}
		v.SetBool(b)
	case f.typ.Kind() == reflect.Int || f.typ.Kind() == reflect.Int64:
		s, err := one()
		if err != nil {
			return err
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a whole number", f.path, s)
		}
		v.SetInt(n)
	case f.typ.Kind() == reflect.Float64:
		s, err := one()
		if err != nil {
			return err
		}
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.path, s)
		}
		v.SetFloat(n)
	case f.typ == reflect.TypeOf([]string{}):
		v.Set(reflect.ValueOf(splitList(raw, isList)))
	case f.typ == reflect.TypeOf([]int{}):
		var list []int
		for _, r := range splitList(raw, isList) {
			n, err := strconv.Atoi(r)
			if err != nil {
				return fmt.Errorf("%s: %q is not a whole number", f.path, r)
			}
			list = append(list, n)
		}
		v.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("%s: unsupported type %s", f.path, f.typ)
	}
	return nil
}

// splitList: a YAML file gives a list; the environment (or a …_FILE
// named by it) a string of values separated by commas or line breaks, so a
// credential file can hold one value per line.
func splitList(raw []string, isList bool) []string {
	var out []string
	for _, r := range raw {
		parts := []string{r}
		if !isList {
			parts = strings.FieldsFunc(r, func(c rune) bool { return c == ',' || c == '\n' || c == '\r' })
		}
		for _, p := range parts {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func applyYAML(c *Config, b []byte) error {
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("not valid YAML (sections of key: value): %w", err)
	}
	byPath := map[string]field{}
	for _, f := range fields() {
		byPath[f.path] = f
	}
	for sec, kv := range doc {
		for k, val := range kv {
			f, ok := byPath[sec+"."+k]
			if !ok {
				return fmt.Errorf("unknown setting %s.%s", sec, k)
			}
			var raw []string
			isList := false
			switch x := val.(type) {
			case []any:
				isList = true
				for _, e := range x {
					raw = append(raw, fmt.Sprint(e))
				}
			case nil:
			default:
				raw = []string{fmt.Sprint(x)}
			}
			if err := f.set(c, raw, isList); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyEnv(c *Config, env []string) error {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "KEYWARDEN_") {
			m[k] = v
		}
	}
	for _, f := range fields() {
		for _, name := range f.env {
			if f.secret() {
				if p, ok := m[name+"_FILE"]; ok {
					b, err := os.ReadFile(p)
					if err != nil {
						return fmt.Errorf("%s_FILE: %w", name, err)
					}
					if err := f.set(c, []string{strings.TrimSpace(string(b))}, false); err != nil {
						return err
					}
					continue
				}
			}
			if v, ok := m[name]; ok {
				if err := f.set(c, []string{v}, false); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
		}
	}
	return nil
}

// EnvNames lists every setting's environment names (for docs and tests).
func EnvNames() map[string][]string {
	out := map[string][]string{}
	for _, f := range fields() {
		out[f.path] = f.env
	}
	return out
}

// Dump renders the configuration as JSON with every secret redacted.
func (c Config) Dump() string {
	b, _ := json.MarshalIndent(c, "", "  ")
	return string(b)
}
