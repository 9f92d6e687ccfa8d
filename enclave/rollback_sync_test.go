package enclave

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keywarden/keywarden/internal/tpmdev"
	"github.com/keywarden/keywarden/store"
)

// guess writes one record in a transaction marked by NewGeneration, as a
// PIN guess is counted.
func guess(t testing.TB, rb *Rollback, db *store.DB, key string, n int) {
	t.Helper()
	err := db.Update(context.Background(), func(tx *store.Tx) error {
		if err := rb.NewGeneration(tx); err != nil {
			return err
		}
		return tx.Put(store.BucketCredentials, []byte(key), []byte{byte(n), byte(n >> 8)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRollbackNewGenerationAndSync: a raw copy of the running store taken
// while an ordinary change's increment is pending (it would share that
// generation) is refused at start once a transaction marked by
// NewGeneration committed and Sync returned: Sync waits for the counter
// without waiting for the background interval.
func TestRollbackNewGenerationAndSync(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(dir, "k.db"))
	h.stop()
	// The background incrementer never fires during the test.
	rb, err := h.start(RollbackOptions{Interval: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	touch(t, h.db) // pending, shareable
	g := rb.Status().Generation

	// A raw copy (no BeforeBackup): it carries generation g.
	copyPath := filepath.Join(dir, "copy.db")
	f, err := os.Create(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	guess(t, rb, h.db, "guess", 1)
	if got := rb.Status().Generation; got != g+1 {
		t.Fatalf("a NewGeneration transaction shared the pending generation: gen %d, want %d", got, g+1)
	}
	if err := rb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c := counterValue(t, rb); c != g+1 {
		t.Fatalf("after Sync the counter is %d, want %d", c, g+1)
	}
	// A crash right after the answer: nothing more is flushed.
	rb.crash()
	h.stop()

	copyFile(t, copyPath, h.path)
	if _, err := h.start(RollbackOptions{}); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("start on a copy taken before the guess: err = %v, want ErrRolledBack", err)
	}
	h.stop()
}

// TestRollbackSyncShared: concurrent marked transactions and Syncs cost
// at most one NV increment per committed batch, and every Sync returns
// with the counter at or past the generation of its own commit.
func TestRollbackSyncShared(t *testing.T) {
	ctx := context.Background()
	sim := openSim(t, testSeed)
	defer sim.Close()
	h := newRBHost(t, sim, filepath.Join(t.TempDir(), "k.db"))
	h.stop()
	counting := tpmdev.NewCounting(sim)
	h.tpm = counting
	rb, err := h.start(RollbackOptions{Interval: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	commits0, inc0 := h.db.Stats().Commits, rb.Increments()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guess(t, rb, h.db, "g", i)
			gen := rb.Status().Generation
			if err := rb.Sync(ctx); err != nil {
				errs <- err
				return
			}
			if st := rb.Status(); st.Counter < gen {
				errs <- errors.New("Sync returned before the counter reached the commit's generation")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits, incs := h.db.Stats().Commits-commits0, rb.Increments()-inc0
	if incs == 0 || incs > commits {
		t.Fatalf("%d NV increments for %d committed batches of 64 marked transactions", incs, commits)
	}
	t.Logf("64 concurrent guesses: %d batches, %d NV increments", commits, incs)
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()
}
