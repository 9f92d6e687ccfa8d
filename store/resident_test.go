package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// mappedRSS is this process's resident kilobytes of its mapping of path.
func mappedRSS(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, kb := false, 0
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") {
			in = strings.HasSuffix(line, path)
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			n, _ := strconv.Atoi(fields[1])
			kb += n
		}
	}
	return kb
}

// TestDropResident: after a read of every record the store file's pages
// are in the process's resident set; DropResident takes them out, and the
// records still read back.
func TestDropResident(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 1000)
	for batch := range 8 {
		if err := db.Update(ctx, func(tx *Tx) error {
			for i := range 2000 {
				if err := tx.Put(BucketKeys, fmt.Appendf(nil, "k%d-%05d", batch, i), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() int {
		n := 0
		if err := db.View(ctx, func(tx *Tx) error {
			return tx.ForEach(BucketKeys, nil, func(_, v []byte) error { n += len(v); return nil })
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	readAll()
	before := mappedRSS(t, path)
	if before < 8000 {
		t.Fatalf("after reading 16 MB of records the mapping holds %d kB resident; the test cannot tell", before)
	}
	if err := db.DropResident(); err != nil {
		t.Fatal(err)
	}
	after := mappedRSS(t, path)
	if after > before/4 {
		t.Fatalf("DropResident: %d kB resident before, %d kB after", before, after)
	}
	if n := readAll(); n != 16000*1000 {
		t.Fatalf("records after DropResident: %d bytes, want %d", n, 16000*1000)
	}
}
