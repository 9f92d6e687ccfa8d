package audit

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkRecordParallel measures durable Records from many concurrent
// callers (64 goroutines on 2 cores): group commit shares one fsync per
// batch. Reports lines/s and fsyncs/line.
func BenchmarkRecordParallel(b *testing.B) {
	l := openLog(b, Options{})
	ev := Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "user:1234", Method: "passkey",
		RequestID: "0123456789abcdef", Remote: "203.0.113.7"}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Record(context.Background(), ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	s := l.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(s.Fsyncs)/float64(s.Lines), "fsyncs/line")
}

// BenchmarkRecordSerial is one caller at a time: one fsync per line, the
// baseline group commit improves on.
func BenchmarkRecordSerial(b *testing.B) {
	l := openLog(b, Options{})
	ev := Event{Action: ActionRelease, Outcome: OutcomeSuccess, Owner: "user:1234", Method: "passkey"}
	for b.Loop() {
		if err := l.Record(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
	}
	s := l.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(s.Fsyncs)/float64(s.Lines), "fsyncs/line")
}

// BenchmarkRefusalFlood is the cost of one refusal while a flood is being
// rate-limited (nearly all are counted and dropped).
func BenchmarkRefusalFlood(b *testing.B) {
	l := openLog(b, Options{})
	ev := Event{Reason: "origin_mismatch", Remote: "203.0.113.7"}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Refusal(context.Background(), ev)
		}
	})
	b.StopTimer()
	if err := l.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(l.Stats().RefusalsSampled), "lines")
}

// BenchmarkVerify measures verification speed over a log of 10,000 lines.
func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	l := openLog(b, Options{Dir: dir})
	const n = 10_000
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- l.Record(context.Background(), Event{Action: ActionStore, Owner: fmt.Sprintf("user:%d", i)})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Verify(dir, testKey()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
