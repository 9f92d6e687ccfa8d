package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
)

// TestBackupOutlivesWriteTimeout: the online backup of a store too large to
// stream within the listener's write timeout (listen.write_timeout, 15 s by
// default: a store of a few GB on a busy host) arrives whole, because the
// backup moves its write deadline on as it makes progress. The client here
// pauses longer than the write timeout once the socket buffers are full,
// as a slow disk or network does; before, the server's write failed with
// an i/o timeout and the client got a truncated copy (unexpected EOF).
func TestBackupOutlivesWriteTimeout(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Listen.WriteTimeout = writeTimeout })
	// About 24 MB of records: more than loopback's socket buffers hold, so
	// the server's writes block while the client pauses.
	val := bytes.Repeat([]byte{0xa5}, 64<<10)
	for i := 0; i < 384; i += 64 {
		if err := h.db.Update(context.Background(), func(tx *store.Tx) error {
			for j := i; j < i+64; j++ {
				if err := tx.Put(store.BucketUsers, []byte(fmt.Sprintf("filler-%04d", j)), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h.srv.Admin, WriteTimeout: writeTimeout}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %s", resp.Status)
	}
	var got bytes.Buffer
	if _, err := io.CopyN(&got, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * writeTimeout) // a stall longer than the write timeout (not an assertion on time)
	if _, err := io.Copy(&got, resp.Body); err != nil {
		t.Fatalf("backup cut after %d bytes: %v", got.Len(), err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(file, got.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(file, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the %d-byte backup does not open: %v", got.Len(), err)
	}
	defer db.Close()
	if err := db.View(context.Background(), func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketUsers, []byte("filler-0383"))
		if err == nil && !bytes.Equal(v, val) {
			err = fmt.Errorf("last record differs")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBackupCutsATrickle: a client that keeps the backup open by reading a
// trickle (less than backupMinProgress per backupStall) is cut, so it
// cannot hold the store's read transaction and a concurrency slot for
// hours. Before, every write moved the deadline on, however little the
// client read.
func TestBackupCutsATrickle(t *testing.T) {
	oldStall, oldMin := backupStall, backupMinProgress
	backupStall, backupMinProgress = 400*time.Millisecond, 4<<20
	t.Cleanup(func() { backupStall, backupMinProgress = oldStall, oldMin })
	const writeTimeout = 200 * time.Millisecond
	h := newHarness(t, func(c *config.Config, _ *Options) { c.Listen.WriteTimeout = writeTimeout })
	val := bytes.Repeat([]byte{0x5a}, 64<<10)
	for i := 0; i < 384; i += 64 {
		if err := h.db.Update(context.Background(), func(tx *store.Tx) error {
			for j := i; j < i+64; j++ {
				if err := tx.Put(store.BucketUsers, []byte(fmt.Sprintf("filler-%04d", j)), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h.srv.Admin, WriteTimeout: writeTimeout}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// 32 KiB every 50 ms: about 256 KiB per 400 ms window, far below the
	// 4 MiB asked for. The whole store is about 24 MB; stop at 12 MB.
	buf := make([]byte, 32<<10)
	var read int
	for read < 12<<20 {
		n, err := io.ReadFull(resp.Body, buf)
		read += n
		if err != nil {
			t.Logf("trickle cut after %d bytes: %v", read, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("a client reading a trickle still had the stream after %d bytes", read)
}
