// Command soakbench drives Keywarden's soak (scripts/soak.sh; see
// docs/BENCHMARKS.md): Firebase releases and stores of many users at a fixed
// rate below saturation for a long run, sampling the server's
// process_resident_memory_bytes and go_goroutines from /metrics at a fixed
// interval, then judging the series:
//
//	soakbench -url U -store F -read F -metrics M [-rate 800] [-c 16] [-d 30m]
//	          [-sample 30s] [-warmup 5m] [-writes 50] [-out series.tsv]
//
// Request i goes to user i mod N (N = lines of the token files, as
// loadbench mint writes them); every -writes-th request stores the user's
// key again with its store token (an overwrite), the others release it with
// its read token. Passes when no request failed, RSS at the end of the run
// is less than 10 % above RSS at the end of the warm-up, and the goroutine
// count stays within a small band (see flat).
//
// A benchmark tool, not part of the appliance.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:19802/v1/firebase/key", "the Firebase key URL")
	storeF := flag.String("store", "", "tokens that store each user's key, one a line")
	readF := flag.String("read", "", "tokens that read each user's key, one a line (line i: the same user as store line i)")
	metricsURL := flag.String("metrics", "http://127.0.0.1:19802/metrics", "the server's /metrics")
	adminKey := flag.String("admin-key", "", "bearer key for /metrics, if it asks for one")
	rate := flag.Int("rate", 800, "requests per second")
	conc := flag.Int("c", 16, "concurrent connections")
	dur := flag.Duration("d", 30*time.Minute, "duration")
	every := flag.Duration("sample", 30*time.Second, "sampling interval")
	warmup := flag.Duration("warmup", 5*time.Minute, "warm-up: RSS growth is judged from the first sample at or after it")
	writes := flag.Int("writes", 50, "every n-th request is a store (0: none)")
	out := flag.String("out", "", "write the sampled series here (TSV)")
	flag.Parse()

	store, read := lines(*storeF), lines(*readF)
	if len(store) == 0 || len(store) != len(read) {
		log.Fatalf("soak: need as many store tokens as read tokens (%d, %d)", len(store), len(read))
	}
	l := &loader{url: *url, store: store, read: read, writes: *writes,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *conc}}}
	sampler := &sampler{url: *metricsURL, key: *adminKey, client: &http.Client{Timeout: 10 * time.Second}}

	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	work := make(chan int, *rate)
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				l.do(i)
			}
		}()
	}
	// The pacer hands out request numbers at -rate per second in 10 ms
	// steps; when every worker is busy and a second's worth of requests is
	// queued it counts the request as late and drops it (reported: the
	// server or the shared machine fell behind the rate).
	go func() {
		defer close(work)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		sent := 0
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				due := int(float64(*rate) * now.Sub(start).Seconds())
				for ; sent < due; sent++ {
					select {
					case work <- sent:
					default:
						l.late.Add(1)
					}
				}
			}
		}
	}()
	var series []sample
	record := func() {
		s := sampler.take(time.Since(start))
		s.requests, s.failed, s.late = l.done.Load(), l.failed.Load(), l.late.Load()
		series = append(series, s)
		fmt.Printf("%6.0fs  rss %7.1f MB  goroutines %4d  requests %9d  failed %d  late %d\n",
			s.at.Seconds(), float64(s.rss)/(1<<20), s.goroutines, s.requests, s.failed, s.late)
	}
	record()
	ticker := time.NewTicker(*every)
	deadline := time.After(*dur)
loop:
	for {
		select {
		case <-ticker.C:
			record()
		case <-deadline:
			break loop
		}
	}
	ticker.Stop()
	close(stop)
	wg.Wait()
	record()
	if *out != "" {
		var b bytes.Buffer
		b.WriteString("seconds\trss_bytes\tgoroutines\trequests\tfailed\tlate\n")
		for _, s := range series {
			fmt.Fprintf(&b, "%.0f\t%d\t%d\t%d\t%d\t%d\n", s.at.Seconds(), s.rss, s.goroutines, s.requests, s.failed, s.late)
		}
		if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	v := judge(series, *warmup)
	lat := l.percentiles()
	fmt.Printf("requests %d (releases %d, stores %d), failed %d, late %d, p50 %s p99 %s max %s\n",
		l.done.Load(), l.releases.Load(), l.stores.Load(), l.failed.Load(), l.late.Load(), lat[0], lat[1], lat[2])
	fmt.Println(v.text)
	if !v.pass {
		os.Exit(1)
	}
}

func lines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	return strings.Fields(string(b))
}

type loader struct {
	url         string
	store, read []string
	writes      int
	client      *http.Client

	done, failed, late, releases, stores atomic.Int64
	mu                                   sync.Mutex
	lat                                  []time.Duration
	firstErr                             sync.Once
}

var storeBody = []byte(`{"key":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}`)

func (l *loader) do(i int) {
	u := i % len(l.read)
	var req *http.Request
	if l.writes > 0 && i%l.writes == 0 {
		req, _ = http.NewRequest(http.MethodPut, l.url, bytes.NewReader(storeBody))
		req.Header.Set("Authorization", "Bearer "+l.store[u])
		req.Header.Set("Content-Type", "application/json")
		l.stores.Add(1)
	} else {
		req, _ = http.NewRequest(http.MethodGet, l.url, nil)
		req.Header.Set("Authorization", "Bearer "+l.read[u])
		l.releases.Add(1)
	}
	t0 := time.Now()
	resp, err := l.client.Do(req)
	d := time.Since(t0)
	ok := err == nil
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			ok = false
			err = fmt.Errorf("%s %s: %s", req.Method, resp.Status, bytes.TrimSpace(b))
		}
	}
	l.done.Add(1)
	if !ok {
		l.failed.Add(1)
		l.firstErr.Do(func() { log.Printf("soak: first failed request: %v", err) })
	}
	l.mu.Lock()
	if len(l.lat) < 4_000_000 {
		l.lat = append(l.lat, d)
	}
	l.mu.Unlock()
}

func (l *loader) percentiles() [3]time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lat) == 0 {
		return [3]time.Duration{}
	}
	sort.Slice(l.lat, func(a, b int) bool { return l.lat[a] < l.lat[b] })
	n := len(l.lat)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return [3]time.Duration{r(l.lat[n/2]), r(l.lat[n*99/100]), r(l.lat[n-1])}
}

type sample struct {
	at                     time.Duration
	rss                    int64
	goroutines             int64
	requests, failed, late int64
}

type sampler struct {
	url, key string
	client   *http.Client
}

// take reads the two gauges; a failed scrape is a sample of zeros and is
// reported by judge (the soak needs every sample).
func (s *sampler) take(at time.Duration) sample {
	out := sample{at: at}
	req, _ := http.NewRequest(http.MethodGet, s.url, nil)
	if s.key != "" {
		req.Header.Set("Authorization", "Bearer "+s.key)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		log.Printf("soak: scrape: %v", err)
		return out
	}
	defer resp.Body.Close()
	out.rss, out.goroutines = parseGauges(resp.Body)
	return out
}

// parseGauges reads process_resident_memory_bytes and go_goroutines from a
// Prometheus text exposition.
func parseGauges(r io.Reader) (rss, goroutines int64) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "process_resident_memory_bytes":
			rss = int64(v)
		case "go_goroutines":
			goroutines = int64(v)
		}
	}
	return rss, goroutines
}

type verdict struct {
	pass bool
	text string
}

// flatBand is how far the goroutine count may move after the warm-up and
// still be flat: the server's goroutines are its fixed ones plus one per
// open connection and per request in flight, so the band is the load's
// concurrency, not a growth.
const flatBand = 40

// judge applies the soak's pass rules to the series: no failed request,
// every scrape answered, RSS at the end < 1.10 × RSS at the first sample
// at or after warmup, goroutines after the warm-up within flatBand of each
// other.
func judge(series []sample, warmup time.Duration) verdict {
	var why []string
	last := series[len(series)-1]
	if last.failed > 0 {
		why = append(why, fmt.Sprintf("%d requests failed", last.failed))
	}
	base := -1
	for i, s := range series {
		if s.rss == 0 {
			why = append(why, fmt.Sprintf("scrape at %.0fs failed", s.at.Seconds()))
		}
		if base < 0 && s.at >= warmup {
			base = i
		}
	}
	if base < 0 || base == len(series)-1 {
		return verdict{false, "FAIL: the run is shorter than its warm-up"}
	}
	after := series[base:]
	gmin, gmax, rmax := after[0].goroutines, after[0].goroutines, after[0].rss
	for _, s := range after {
		gmin, gmax, rmax = min(gmin, s.goroutines), max(gmax, s.goroutines), max(rmax, s.rss)
	}
	growth := float64(last.rss)/float64(after[0].rss) - 1
	if growth >= 0.10 {
		why = append(why, fmt.Sprintf("RSS grew %.1f %% after the warm-up", 100*growth))
	}
	if gmax-gmin > flatBand {
		why = append(why, fmt.Sprintf("goroutines moved %d..%d after the warm-up", gmin, gmax))
	}
	note := ""
	if last.late > 0 {
		// Not a failure of the server's: the machine (shared) could not
		// keep the rate at moments; the soak's load was that much lower.
		note = fmt.Sprintf("; %d requests not sent on time (queue full: the machine or the server fell behind the rate)", last.late)
	}
	text := fmt.Sprintf("after the warm-up (%.0fs): RSS %.1f MB -> %.1f MB at the end (%+.2f %%, max %.1f MB); goroutines %d..%d",
		after[0].at.Seconds(), float64(after[0].rss)/(1<<20), float64(last.rss)/(1<<20), 100*growth, float64(rmax)/(1<<20), gmin, gmax) + note
	if len(why) > 0 {
		return verdict{false, "FAIL: " + strings.Join(why, "; ") + "\n" + text}
	}
	return verdict{true, "PASS: " + text}
}
