package firebase

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeObject(t *testing.T) {
	good := []struct {
		in   string
		want map[string]string
	}{
		{`{}`, map[string]string{}},
		{` { "a" : 1 , "b":[1, {"c":"}"}, []], "d" :{"e":null}} `, map[string]string{"a": "1", "b": `[1, {"c":"}"}, []]`, "d": `{"e":null}`}},
		{`{"a\"b":"x\\","c":"\u00e9"}`, map[string]string{`a"b`: `"x\\"`, "c": `"\u00e9"`}},
		{`{"x":{"a":1},"y":{"a":2}}`, map[string]string{"x": `{"a":1}`, "y": `{"a":2}`}}, // same name in sibling objects
		{`{"n":-1.5e3,"t":true,"f":false}`, map[string]string{"n": "-1.5e3", "t": "true", "f": "false"}},
		{`{"aud":1,"AUD":2}`, map[string]string{"aud": "1", "AUD": "2"}}, // names are case-sensitive
		{`{"d":` + strings.Repeat("[", maxJSONDepth-1) + strings.Repeat("]", maxJSONDepth-1) + `}`, nil},
	}
	for _, tc := range good {
		obj, err := decodeObject([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if tc.want == nil {
			continue
		}
		if len(obj) != len(tc.want) {
			t.Errorf("%s: %d members, want %d", tc.in, len(obj), len(tc.want))
		}
		for k, v := range tc.want {
			if string(obj[k]) != v {
				t.Errorf("%s: %q = %s, want %s", tc.in, k, obj[k], v)
			}
		}
	}
	bad := []struct {
		in   string
		want error
	}{
		{``, errNotObject},
		{`[]`, errNotObject},
		{`"x"`, errNotObject},
		{`{"a":1}{}`, errNotObject},
		{`{"a":1,}`, errNotObject},
		{`{'a':1}`, errNotObject},
		{"{\"a\":\"\xff\"}", errNotUTF8},
		{`{"a":1,"a":2}`, errDuplicateName},
		{`{"a":1,"\u0061":2}`, errDuplicateName},
		{`{"x":[{"k":1,"k":1}]}`, errDuplicateName},
		{`{"d":` + strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth) + `}`, errTooDeep},
		{`{"d":` + strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth) + `}`, errTooDeep},
	}
	for _, tc := range bad {
		if _, err := decodeObject([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, err, tc.want)
		}
	}
}

func TestTypedMembers(t *testing.T) {
	obj, err := decodeObject([]byte(`{"s":"x","n":1700000000,"f":1.5,"neg":-1,"big":99999999999999,"b":true,"nul":null,"o":{"k":"v"},"a":["x"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok, err := obj.str("s"); s != "x" || !ok || err != nil {
		t.Errorf("str(s) = %q %v %v", s, ok, err)
	}
	for _, name := range []string{"n", "nul", "o", "a", "b"} {
		if _, _, err := obj.str(name); err == nil {
			t.Errorf("str(%s) accepted", name)
		}
	}
	if _, ok, err := obj.str("missing"); ok || err != nil {
		t.Errorf("str(missing) = %v %v", ok, err)
	}
	if v, ok, err := obj.unix("n"); v != 1700000000 || !ok || err != nil {
		t.Errorf("unix(n) = %d %v %v", v, ok, err)
	}
	for _, name := range []string{"f", "neg", "big", "s", "nul"} {
		if _, _, err := obj.unix(name); err == nil {
			t.Errorf("unix(%s) accepted", name)
		}
	}
	if v, ok, err := obj.boolean("b"); !v || !ok || err != nil {
		t.Errorf("boolean(b) = %v %v %v", v, ok, err)
	}
	if _, _, err := obj.boolean("nul"); err == nil {
		t.Error("boolean(null) accepted")
	}
	if o, ok, err := obj.object("o"); !ok || err != nil || string(o["k"]) != `"v"` {
		t.Errorf("object(o) = %v %v %v", o, ok, err)
	}
	if _, _, err := obj.object("a"); err == nil {
		t.Error("object(array) accepted")
	}
}

func TestQuote(t *testing.T) {
	if got := quote(`a"b`); got != `"a\"b"` {
		t.Errorf("quote = %s", got)
	}
	long := strings.Repeat("é", 40) // 80 bytes
	got := quote(long)
	if !strings.HasSuffix(got, "…") || len(got) > 70 || strings.Contains(got, "\\x") {
		t.Errorf("quote(long) = %s", got)
	}
}
