package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func openTemp(t testing.TB) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "k.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestPutGetDelete(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	k := Key("user:a", "PASSKEY")
	if err := db.Update(ctx, func(tx *Tx) error { return tx.Put(BucketKeys, k, []byte("v1")) }); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := db.View(ctx, func(tx *Tx) (err error) { got, err = tx.Get(BucketKeys, k); return }); err != nil || string(got) != "v1" {
		t.Fatalf("get = %q, %v", got, err)
	}
	err := db.View(ctx, func(tx *Tx) error { _, err := tx.Get(BucketKeys, Key("user:b", "PASSKEY")); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v, want ErrNotFound", err)
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.Put(Bucket("nope"), k, nil) }); err == nil {
		t.Fatal("unknown bucket accepted")
	}
	if err := db.Update(ctx, func(tx *Tx) error { return tx.Delete(BucketKeys, k) }); err != nil {
		t.Fatal(err)
	}
	err = db.View(ctx, func(tx *Tx) error { _, err := tx.Get(BucketKeys, k); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestForEachPrefix(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	err := db.Update(ctx, func(tx *Tx) error {
		for _, k := range [][]byte{Key("a", "1"), Key("a", "2"), Key("ab", "1"), Key("b", "1")} {
			if err := tx.Put(BucketKeys, k, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	_ = db.View(ctx, func(tx *Tx) error {
		return tx.ForEach(BucketKeys, Prefix("a"), func(k, v []byte) error {
			seen = append(seen, string(bytes.ReplaceAll(k, []byte{0}, []byte("/"))))
			return nil
		})
	})
	if strings.Join(seen, ",") != "a/1,a/2" {
		t.Fatalf("prefix a: %v", seen)
	}
	var n int
	_ = db.Update(ctx, func(tx *Tx) (err error) { n, err = tx.DeletePrefix(BucketKeys, Prefix("a")); return })
	if n != 2 {
		t.Fatalf("DeletePrefix removed %d, want 2", n)
	}
}

func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	before := db.Stats()
	var wg sync.WaitGroup
	const writers = 200
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.Update(ctx, func(tx *Tx) error { return tx.Put(BucketKeys, Key(fmt.Sprint(i)), []byte("x")) }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s := db.Stats()
	commits := s.Commits - before.Commits
	if s.Updates-before.Updates != writers || commits >= writers {
		t.Fatalf("%d updates took %d commits; want fewer commits than updates", s.Updates-before.Updates, commits)
	}
	t.Logf("%d concurrent updates in %d commits", writers, commits)
}

// A write still queued behind a stalled commit (an etcd backend without
// quorum holds its batch for the transaction timeout) is withdrawn when its
// caller's context ends: the caller gets its own deadline's error, and the
// write never runs afterwards, so the error is the truth. (A write the
// writer already took: TestTakenWriteAnswersAtCallersDeadline.)
func TestQueuedWriteWithdrawnAtCallersDeadline(t *testing.T) {
	db := openTemp(t)
	stalled, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.Update(context.Background(), func(tx *Tx) error {
			select {
			case <-stalled:
			default:
				close(stalled)
			}
			<-release // the writer is held inside this batch's transaction
			return tx.Put(BucketKeys, Key("first"), []byte("x"))
		})
	}()
	<-stalled
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var ran bool
	second := make(chan error, 1)
	go func() {
		second <- db.Update(ctx, func(tx *Tx) error {
			ran = true
			return tx.Put(BucketKeys, Key("second"), []byte("x"))
		})
	}()
	var err error
	heldPastDeadline := false
	select {
	case err = <-second:
	case <-time.After(5 * time.Second):
		// Its 50 ms deadline long gone, the caller still waits for a
		// commit it is not part of: let the stalled batch finish.
		heldPastDeadline = true
		close(release)
		err = <-second
	}
	select {
	case <-release:
	default:
		close(release)
	}
	if e := <-first; e != nil {
		t.Fatalf("the stalled write: %v", e)
	}
	if heldPastDeadline {
		t.Fatalf("a queued write's caller was held until the stalled commit ended (then got %v); want its own deadline's error at once", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("queued write behind a stalled commit returned %v; want ErrUnavailable with its caller's deadline", err)
	}
	// One more write through the same writer: it runs after anything the
	// withdrawn write could have done.
	if err := db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketKeys, Key("third"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	var got error
	_ = db.View(context.Background(), func(tx *Tx) error { _, got = tx.Get(BucketKeys, Key("second")); return nil })
	if ran || !errors.Is(got, ErrNotFound) {
		t.Fatalf("withdrawn write ran=%v, stored err %v; want never run and nothing stored", ran, got)
	}
}

// TestTakenWriteAnswersAtCallersDeadline: a write in a transaction whose
// commit stalls (an etcd backend without quorum holds it for its timeout)
// answers its caller at the caller's deadline with ErrUnavailable, not
// when the commit ends; it was not acknowledged, and when the commit does
// land, the write is in it.
func TestTakenWriteAnswersAtCallersDeadline(t *testing.T) {
	db := openTemp(t)
	ran, release := make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		got <- db.Update(ctx, func(tx *Tx) error {
			if err := tx.Put(BucketKeys, Key("taken"), []byte("x")); err != nil {
				return err
			}
			close(ran)
			<-release // the transaction stalls after the caller's function ran
			return nil
		})
	}()
	<-ran
	var err error
	select {
	case err = <-got:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatalf("the caller was held past its 100 ms deadline until the stalled commit ended (%v)", <-got)
	}
	close(release)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("taken write past its caller's deadline: %v; want ErrUnavailable with the deadline", err)
	}
	// The next write runs after the stalled transaction: it committed.
	if err := db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketKeys, Key("after"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	var v []byte
	_ = db.View(context.Background(), func(tx *Tx) (err error) { v, err = tx.Get(BucketKeys, Key("taken")); return })
	if string(v) != "x" {
		t.Fatalf("the unconfirmed write did not land with its transaction: %q", v)
	}
}

func TestFailedUpdateDoesNotSinkTheBatch(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Update(ctx, func(tx *Tx) error {
				if err := tx.Put(BucketKeys, Key(fmt.Sprint(i)), []byte("x")); err != nil {
					return err
				}
				if i%7 == 0 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		var got error
		_ = db.View(ctx, func(tx *Tx) error { _, got = tx.Get(BucketKeys, Key(fmt.Sprint(i))); return nil })
		if i%7 == 0 {
			if !errors.Is(err, boom) || !errors.Is(got, ErrNotFound) {
				t.Fatalf("write %d: err %v, stored err %v; want boom and nothing stored", i, err, got)
			}
		} else if err != nil || got != nil {
			t.Fatalf("write %d: err %v, stored err %v", i, err, got)
		}
	}
}

func TestMigrations(t *testing.T) {
	// Each migration, applied on top of its predecessor, creates exactly the
	// buckets it names and advances the version by one.
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	b, err := OpenBolt(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int][]Bucket{
		1: {BucketMeta, BucketKeys, BucketKeyVersions, BucketUsers},
		2: {BucketCredentials, BucketCustodian, BucketClientShares, BucketJobs, BucketBlocked},
		3: {BucketPIN},
		4: {BucketClusterJoins},
	}
	if len(want) != len(migrations) {
		t.Fatalf("test covers %d migrations, there are %d", len(want), len(migrations))
	}
	exists := func(tx BackendTx, bk Bucket) bool {
		return tx.ForEach(bk, nil, func(k, v []byte) error { return nil }) == nil
	}
	for v := 1; v <= len(migrations); v++ {
		if err := migrateTo(ctx, b, v); err != nil {
			t.Fatal(err)
		}
		_ = b.View(ctx, func(tx BackendTx) error {
			if got, _ := tx.SchemaVersion(); got != uint64(v) {
				t.Fatalf("after migration %d schema = %d", v, got)
			}
			for _, bk := range want[v] {
				if !exists(tx, bk) {
					t.Fatalf("migration %d did not create %s", v, bk)
				}
			}
			if v < len(migrations) {
				for _, bk := range want[v+1] {
					if exists(tx, bk) {
						t.Fatalf("bucket %s exists before migration %d", bk, v+1)
					}
				}
			}
			return nil
		})
	}
	var all []Bucket
	for _, bs := range want {
		all = append(all, bs...)
	}
	if len(Buckets()) != len(all) {
		t.Fatalf("Buckets() = %v, want the %d the migrations create", Buckets(), len(all))
	}
	// A file from a newer build is refused.
	_ = b.Update(ctx, func(tx BackendTx) error { return tx.SetSchemaVersion(99) })
	b.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestCorruptAndTruncatedFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	db, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketKeys, []byte("k"), []byte("v")) })
	db.Close()
	data, _ := os.ReadFile(good)
	ps := os.Getpagesize()
	garbage := bytes.Repeat([]byte{0xA5}, 4*ps)
	zeroedMeta := append(make([]byte, 2*ps), data[2*ps:]...)
	cases := map[string][]byte{
		"truncated to half a page": data[:ps/2],
		"truncated mid-file":       data[:len(data)-ps/3],
		"garbage":                  garbage,
		"meta pages zeroed":        zeroedMeta,
		"text file":                []byte(strings.Repeat("not a database\n", 1000)),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(p, Options{Timeout: 100 * time.Millisecond})
			if err == nil {
				db.Close()
				t.Fatal("corrupt file opened without error")
			}
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

func TestFileModeAndLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.db")
	db, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	// bbolt's flock is per open file description, so a second Open in this
	// process is refused like one from another process would be.
	if _, err := Open(p, Options{Timeout: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v", err)
	}
}

func TestOnlineBackup(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	for i := range 100 {
		_ = db.Update(ctx, func(tx *Tx) error { return tx.Put(BucketKeys, Key(fmt.Sprint(i)), []byte("v")) })
	}
	p := filepath.Join(t.TempDir(), "backup.db")
	f, _ := os.Create(p)
	if _, err := db.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n := 0
	_ = b.View(ctx, func(tx *Tx) error { return tx.ForEach(BucketKeys, nil, func(k, v []byte) error { n++; return nil }) })
	if n != 100 {
		t.Fatalf("backup has %d records, want 100", n)
	}
}

func TestClosed(t *testing.T) {
	db := openTemp(t)
	db.Close()
	if err := db.Update(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("update after close: %v", err)
	}
}

// TestCrashDurability kills a writer with SIGKILL over and over; every
// write it acknowledged must be there afterwards.
func TestCrashDurability(t *testing.T) {
	if os.Getenv("KEYWARDEN_CRASH_CHILD") != "" {
		t.Skip("child")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	acked := map[string]bool{}
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), "KEYWARDEN_CRASH_CHILD="+path, fmt.Sprintf("KEYWARDEN_CRASH_ROUND=%d", round))
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		deadline := time.After(time.Duration(150+round*40) * time.Millisecond)
		lines := make(chan string)
		go func() {
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				if id, ok := strings.CutPrefix(l, "ACK "); ok {
					acked[id] = true
				}
			case <-deadline:
				_ = cmd.Process.Signal(syscall.SIGKILL)
				for l := range lines {
					if id, ok := strings.CutPrefix(l, "ACK "); ok {
						acked[id] = true
					}
				}
				break read
			}
		}
		_ = cmd.Wait()
	}
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged; the child did not run", len(acked))
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after crashes: %v", err)
	}
	defer db.Close()
	missing := 0
	_ = db.View(context.Background(), func(tx *Tx) error {
		for id := range acked {
			if _, err := tx.Get(BucketKeys, []byte(id)); err != nil {
				missing++
			}
		}
		return nil
	})
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", missing, len(acked))
	}
	t.Logf("%d acknowledged writes survived 8 SIGKILLs", len(acked))
}

func TestCrashChild(t *testing.T) {
	path := os.Getenv("KEYWARDEN_CRASH_CHILD")
	if path == "" {
		t.Skip("run by TestCrashDurability")
	}
	db, err := Open(path, Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	round := os.Getenv("KEYWARDEN_CRASH_ROUND")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-w%d-%d", round, w, i)
				if err := db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketKeys, []byte(id), bytes.Repeat([]byte{1}, 200)) }); err != nil {
					return
				}
				mu.Lock()
				fmt.Println("ACK " + id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func BenchmarkUpdateParallel(b *testing.B) {
	db := openTemp(b)
	ctx := context.Background()
	val := bytes.Repeat([]byte{7}, 120)
	b.SetParallelism(16)
	var n int64
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			k := Key(fmt.Sprint(n))
			mu.Unlock()
			if err := db.Update(ctx, func(tx *Tx) error { return tx.Put(BucketKeys, k, val) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	s := db.Stats()
	b.ReportMetric(float64(s.Commits)/float64(b.N), "fsyncs/op")
}

func BenchmarkGet(b *testing.B) {
	db := openTemp(b)
	ctx := context.Background()
	for i := range 1000 {
		_ = db.Update(ctx, func(tx *Tx) error { return tx.Put(BucketKeys, Key(fmt.Sprint(i)), []byte("value")) })
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			_ = db.View(ctx, func(tx *Tx) error { _, err := tx.Get(BucketKeys, Key(fmt.Sprint(i%1000))); return err })
		}
	})
}
