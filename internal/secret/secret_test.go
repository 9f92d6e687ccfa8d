package secret

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRedaction(t *testing.T) {
	const v = "hunter2-very-secret"
	b := CopyBytes([]byte(v))
	s := NewString(v)
	type wrap struct {
		B Bytes
		S String
	}
	j, err := json.Marshal(wrap{b, s})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	log := slog.New(slog.NewJSONHandler(&sb, nil))
	log.Info("x", "b", b, "s", s)
	outs := []string{
		fmt.Sprint(b), fmt.Sprintf("%v %+v %#v %s %x %q", b, b, b, b, b, b),
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %x %q", s, s, s, s, s, s),
		fmt.Sprintf("%+v", wrap{b, s}), fmt.Sprintf("%#v", wrap{b, s}),
		string(j), sb.String(),
		fmt.Errorf("wrapped: %v", b).Error(),
	}
	for _, o := range outs {
		if strings.Contains(o, v) || strings.Contains(o, fmt.Sprintf("%x", v)) {
			t.Errorf("secret leaked in %q", o)
		}
		if !strings.Contains(o, redacted) {
			t.Errorf("no redaction marker in %q", o)
		}
	}
	if string(b.Reveal()) != v || s.Reveal() != v {
		t.Fatal("Reveal does not return the value")
	}
}

func TestWipeAndEqual(t *testing.T) {
	a := CopyBytes([]byte{1, 2, 3})
	if !a.Equal(CopyBytes([]byte{1, 2, 3})) || a.Equal(CopyBytes([]byte{1, 2, 4})) {
		t.Fatal("Equal is wrong")
	}
	a.Wipe()
	for _, c := range a.Reveal() {
		if c != 0 {
			t.Fatal("Wipe left data")
		}
	}
}
