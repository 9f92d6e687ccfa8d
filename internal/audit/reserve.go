package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// reserveName is the reserve file in the audit directory; it does not match
// the audit file pattern, so Verify ignores it.
const reserveName = ".audit-reserve"

func reservePath(dir string) string { return filepath.Join(dir, reserveName) }

// reserve is disk space held in a file, released when the disk is full so
// the log can still write (see the package doc).
type reserve struct {
	path string
	size int64
}

// allocate makes the reserve file hold size bytes of allocated blocks. It
// is cheap when the file already does. On failure no partial file remains.
func (r *reserve) allocate() error {
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = preallocate(f, r.size)
	if err == nil {
		err = f.Truncate(r.size) // a smaller reserve than last time
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(r.path))
	}
	if err != nil {
		_ = os.Remove(r.path)
		return fmt.Errorf("allocating %s: %w", reserveName, err)
	}
	return nil
}

// release frees the reserved space.
func (r *reserve) release() error {
	if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("releasing %s: %w", reserveName, err)
	}
	return nil
}

// writeOut fills f with size bytes, for filesystems without fallocate.
func writeOut(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	return f.Truncate(size)
}
