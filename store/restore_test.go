package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// makeStore writes a store at path holding key "k" = v.
func makeStore(t *testing.T, path, v string) {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketMeta, []byte("k"), []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}

func readK(t *testing.T, path string) string {
	t.Helper()
	db, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	if err := db.View(context.Background(), func(tx *Tx) (err error) { v, err = tx.Get(BucketMeta, []byte("k")); return }); err != nil {
		t.Fatal(err)
	}
	return string(v)
}

// TestRestoreReplacesAndKeeps: a staged backup, changed through its copy,
// takes the store's place only at Commit; the old store is kept beside it
// under a name no earlier restore took; the backup file is never changed.
func TestRestoreReplacesAndKeeps(t *testing.T) {
	dir := t.TempDir()
	backup, target := filepath.Join(dir, "backup.db"), filepath.Join(dir, "data", "k.db")
	makeStore(t, backup, "backup")
	now := func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }

	// No store yet: staged, prepared, committed; nothing kept.
	r, err := StageRestore(backup, target, RestoreOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	db, err := Open(r.Path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(context.Background(), func(tx *Tx) error { return tx.Put(BucketMeta, []byte("k"), []byte("prepared")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the store appeared before Commit")
	}
	kept, err := r.Commit()
	if err != nil || kept != "" {
		t.Fatalf("Commit = %q, %v", kept, err)
	}
	if got := readK(t, target); got != "prepared" {
		t.Fatalf("store holds %q", got)
	}
	if got := readK(t, backup); got != "backup" {
		t.Fatalf("the backup was changed: %q", got)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}

	// A store exists: refused without Replace, nothing staged.
	if _, err := StageRestore(backup, target, RestoreOptions{Now: now}); !errors.Is(err, ErrStoreExists) {
		t.Fatalf("over an existing store: %v", err)
	}
	if _, err := os.Stat(target + ".recover-tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused restore left its copy")
	}

	// With Replace, twice in the same second: both old stores are kept.
	for i, want := range []string{target + ".replaced-20250102T030405Z", target + ".replaced-20250102T030405Z.1"} {
		r, err := StageRestore(backup, target, RestoreOptions{Replace: true, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		kept, err := r.Commit()
		if err != nil || kept != want {
			t.Fatalf("restore %d: kept %q, %v; want %q", i, kept, err, want)
		}
		r.Abort() // after Commit: a no-op
		if got := readK(t, target); got != "backup" {
			t.Fatalf("restore %d: store holds %q", i, got)
		}
	}
	if got := readK(t, target+".replaced-20250102T030405Z"); got != "prepared" {
		t.Fatalf("the first kept store holds %q", got)
	}
}

// TestRestoreAbort: an aborted restore (the caller failed half-way)
// removes its copy and leaves the store as it was; a copy left by a
// crashed earlier restore does not stop the next one.
func TestRestoreAbort(t *testing.T) {
	dir := t.TempDir()
	backup, target := filepath.Join(dir, "backup.db"), filepath.Join(dir, "k.db")
	makeStore(t, backup, "backup")
	makeStore(t, target, "live")
	if err := os.WriteFile(target+".recover-tmp", []byte("left by a crash"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := StageRestore(backup, target, RestoreOptions{Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readK(t, r.Path); got != "backup" {
		t.Fatalf("staged copy holds %q", got)
	}
	r.Abort()
	if _, err := os.Stat(r.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Abort left the copy")
	}
	if got := readK(t, target); got != "live" {
		t.Fatalf("the store was changed: %q", got)
	}
	if _, err := StageRestore(filepath.Join(dir, "missing.db"), target, RestoreOptions{Replace: true}); err == nil {
		t.Fatal("a missing backup was staged")
	}
	if _, err := StageRestore(dir, target, RestoreOptions{Replace: true}); err == nil {
		t.Fatal("a directory was staged as a backup")
	}
}
