package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseGauges(t *testing.T) {
	text := "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 37\nprocess_resident_memory_bytes 9.6468992e+07\ngo_goroutines_other 5\n"
	rss, g := parseGauges(strings.NewReader(text))
	if rss != 96468992 || g != 37 {
		t.Fatalf("rss %d goroutines %d", rss, g)
	}
}

func TestJudge(t *testing.T) {
	series := func(endRSS, endG, failed int64) []sample {
		return []sample{
			{at: 0, rss: 50 << 20, goroutines: 18},
			{at: 5 * time.Minute, rss: 90 << 20, goroutines: 36},
			{at: 10 * time.Minute, rss: 92 << 20, goroutines: 34},
			{at: 15 * time.Minute, rss: endRSS, goroutines: endG, failed: failed},
		}
	}
	if v := judge(series(95<<20, 35, 0), 5*time.Minute); !v.pass {
		t.Fatalf("steady run judged %q", v.text)
	}
	for name, s := range map[string][]sample{
		"RSS grew 11 %":    series(100<<20, 35, 0),
		"goroutines grew":  series(92<<20, 36+flatBand+1, 0),
		"a failed request": series(92<<20, 35, 1),
	} {
		if v := judge(s, 5*time.Minute); v.pass {
			t.Fatalf("%s: judged a pass: %q", name, v.text)
		}
	}
	if v := judge(series(92<<20, 35, 0), time.Hour); v.pass {
		t.Fatal("a run shorter than its warm-up passed")
	}
}
