package store

// # Restore
//
// A backup replaces a store by copy-then-rename: the backup is copied
// (and fsynced) next to the store file, the caller opens and prepares the
// copy (keywarden recover reseals the root key in it), and only then the
// copy takes the store's place by a rename, the old file kept beside it.
// A restore that fails half-way leaves the store as it was.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ErrStoreExists: [StageRestore] found a store at the target and was not
// told to replace it.
var ErrStoreExists = errors.New("store: a store exists at the target")

// RestoreOptions configure [StageRestore].
type RestoreOptions struct {
	// Replace lets [Restore.Commit] replace an existing store; the old file
	// is kept beside it as <db>.replaced-<time>.
	Replace bool
	// Now names the kept file. nil means time.Now.
	Now func() time.Time
}

// Restore is a backup staged next to the store it is to replace. Open
// Path, prepare it, close it, then Commit; Abort (safe after Commit, and
// meant to be deferred) removes the copy of a restore not committed.
type Restore struct {
	// Path is the staged copy: <db>.recover-tmp.
	Path string

	target    string
	opts      RestoreOptions
	committed bool
}

// StageRestore copies backupPath to a new file next to dbPath, fsynced,
// mode 0600. It refuses (ErrStoreExists) when a store exists at dbPath
// unless opts.Replace, and a backup that is not a regular file. A copy
// left by an earlier restore that did not finish is removed first.
func StageRestore(backupPath, dbPath string, opts RestoreOptions) (*Restore, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if _, err := os.Stat(dbPath); err == nil && !opts.Replace {
		return nil, fmt.Errorf("%w: %s", ErrStoreExists, dbPath)
	}
	fi, err := os.Stat(backupPath)
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: restore: the backup %s is not a regular file", backupPath)
	}
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	r := &Restore{Path: dbPath + ".recover-tmp", target: dbPath, opts: opts}
	_ = os.Remove(r.Path)
	if err := copyBackup(backupPath, r.Path); err != nil {
		_ = os.Remove(r.Path)
		return nil, fmt.Errorf("store: restore: copy the backup: %w", err)
	}
	return r, nil
}

// StageNew is [StageRestore] for a store to be built rather than copied
// (recover from an etcd dump: the records are copied into a new bbolt
// file): Path names no file yet; open it as a new store, fill it, close
// it, then Commit. The same refusal of an existing store applies.
func StageNew(dbPath string, opts RestoreOptions) (*Restore, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if _, err := os.Stat(dbPath); err == nil && !opts.Replace {
		return nil, fmt.Errorf("%w: %s", ErrStoreExists, dbPath)
	}
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	r := &Restore{Path: dbPath + ".recover-tmp", target: dbPath, opts: opts}
	if err := os.Remove(r.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	return r, nil
}

// Commit puts the staged copy in the store's place. An existing store is
// first renamed to <db>.replaced-<time> (returned as kept; "" when there
// was none); if the copy then cannot take its place, the old store is put
// back. The directory is fsynced so the renames survive a crash. Close
// the staged copy before Commit.
func (r *Restore) Commit() (kept string, err error) {
	if r.committed {
		return "", errors.New("store: restore: already committed")
	}
	if _, err := os.Stat(r.target); err == nil {
		if !r.opts.Replace {
			return "", fmt.Errorf("%w: %s", ErrStoreExists, r.target)
		}
		kept, err = keptName(r.target, r.opts.Now())
		if err != nil {
			return "", err
		}
		if err := os.Rename(r.target, kept); err != nil {
			return "", fmt.Errorf("store: restore: keep the old store: %w", err)
		}
	}
	if err := os.Rename(r.Path, r.target); err != nil {
		if kept != "" {
			_ = os.Rename(kept, r.target)
		}
		return "", fmt.Errorf("store: restore: %w", err)
	}
	r.committed = true
	restoreSyncDir(filepath.Dir(r.target))
	return kept, nil
}

// Abort removes the staged copy unless the restore was committed.
func (r *Restore) Abort() {
	if r != nil && !r.committed {
		_ = os.Remove(r.Path)
	}
}

// keptName is a name for the replaced store that no file has yet.
func keptName(target string, now time.Time) (string, error) {
	base := fmt.Sprintf("%s.replaced-%s", target, now.UTC().Format("20060102T150405Z"))
	name := base
	for i := 1; i < 100; i++ {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			return name, nil
		}
		name = fmt.Sprintf("%s.%d", base, i)
	}
	return "", fmt.Errorf("store: restore: no free name for the old store beside %s", target)
}

// copyBackup copies from to a new file to (never overwriting), fsynced.
func copyBackup(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

func restoreSyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
