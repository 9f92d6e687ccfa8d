package enclave

import (
	"strings"
	"testing"
)

func TestValidUserID(t *testing.T) {
	for _, id := range []string{"a", "alice@example.com", "u-1_2.3:4+5", strings.Repeat("Z", MaxUserIDLength)} {
		if err := ValidUserID(id); err != nil {
			t.Errorf("%q refused: %v", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("a", MaxUserIDLength+1), "al ice", "a/b", "a%2Fb", "a#b", "ä", "a\x00", "a\nb", "<x>"} {
		if err := ValidUserID(id); err == nil {
			t.Errorf("%q accepted", id)
		}
	}
}
