package etcdstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// dumpMagic starts a dump:
//
//	"KWETCD1\n" uvarint(revision)
//	{ 0x01 uvarint(len) key uvarint(len) value }   one per etcd key under "<prefix>/" but the fence,
//	                                               the key without "<prefix>/", in key order
//	0x00 uvarint(count) sha256(every byte before this hash)
//
// Records, bucket registrations and the schema version are all in it, so a
// restore under any prefix gives the same store.
const dumpMagic = "KWETCD1\n"

// Snapshot writes every key under the prefix, as of one linearizable
// revision, to w (see the package doc); [Restore] loads it. The records
// are the sealed values as stored: the dump is as secret as the store.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return 0, ErrClosed
	}
	tx := &Tx{s: s, ctx: ctx}
	if err := tx.begin(); err != nil {
		return 0, err
	}
	cw := &countWriter{w: w}
	h := sha256.New()
	bw := bufio.NewWriter(io.MultiWriter(cw, h))
	var num [binary.MaxVarintLen64]byte
	uv := func(n uint64) { bw.Write(num[:binary.PutUvarint(num[:], n)]) }
	field := func(b []byte) { uv(uint64(len(b))); bw.Write(b) }
	bw.WriteString(dumpMagic)
	uv(uint64(tx.rev))

	end := clientv3.GetPrefixRangeEnd(s.prefix)
	from := s.prefix
	var count uint64
	for {
		resp, err := tx.get(from, clientv3.WithRange(end), clientv3.WithLimit(page))
		if err != nil {
			return cw.n, err
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if k == s.fence || strings.HasPrefix(k, s.eph.prefix) {
				continue // the fence; ephemeral state (leased, not records)
			}
			bw.WriteByte(1)
			field([]byte(k[len(s.prefix):]))
			field(kv.Value)
			count++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	bw.WriteByte(0)
	uv(count)
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	if _, err := cw.Write(h.Sum(nil)); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

// DumpInfo describes a dump read by ReadDump.
type DumpInfo struct {
	Revision int64
	Records  uint64
}

// ReadDump reads a dump written by Snapshot, calling fn for each key
// (without the prefix) in order, and checks its count and checksum. A
// damaged or truncated dump is an error; what was already passed to fn
// must then be discarded.
func ReadDump(r io.Reader, fn func(key, value []byte) error) (DumpInfo, error) {
	raw := bufio.NewReader(r)
	br := &hashReader{r: raw, h: sha256.New()}
	var info DumpInfo
	bad := func(what string, err error) (DumpInfo, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return info, fmt.Errorf("etcdstore: dump: %s: %w", what, err)
	}
	magic := make([]byte, len(dumpMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != dumpMagic {
		if err == nil {
			err = errors.New("not a keywarden etcd dump")
		}
		return bad("header", err)
	}
	rev, err := binary.ReadUvarint(br)
	if err != nil {
		return bad("revision", err)
	}
	info.Revision = int64(rev)
	field := func() ([]byte, error) {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("field of %d bytes", n)
		}
		b := make([]byte, n)
		_, err = io.ReadFull(br, b)
		return b, err
	}
	var prev []byte
	for {
		tag, err := br.ReadByte()
		if err != nil {
			return bad("record", err)
		}
		if tag == 0 {
			break
		}
		if tag != 1 {
			return bad("record", fmt.Errorf("unknown tag %#x", tag))
		}
		k, err := field()
		if err != nil {
			return bad("key", err)
		}
		v, err := field()
		if err != nil {
			return bad("value", err)
		}
		if len(k) == 0 || (prev != nil && bytes.Compare(k, prev) <= 0) {
			return bad("record", errors.New("keys empty or out of order"))
		}
		prev = k
		if err := fn(k, v); err != nil {
			return info, err
		}
		info.Records++
	}
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return bad("count", err)
	}
	if count != info.Records {
		return bad("count", fmt.Errorf("trailer says %d records, read %d", count, info.Records))
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(raw, sum); err != nil {
		return bad("checksum", err)
	}
	if !bytes.Equal(sum, br.h.Sum(nil)) {
		return info, errors.New("etcdstore: dump: checksum mismatch (the dump is damaged)")
	}
	return info, nil
}

// hashReader hashes exactly the bytes consumed from r.
type hashReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (hr *hashReader) ReadByte() (byte, error) {
	b, err := hr.r.ReadByte()
	if err == nil {
		hr.h.Write([]byte{b})
	}
	return b, err
}

func (hr *hashReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore loads a dump written by Snapshot into an empty prefix and
// returns the store opened on it. The prefix is marked as being restored
// until the last record and the checksum are in: an interrupted or failed
// restore leaves a prefix Open refuses. The dump is written in several
// transactions (one etcd request each), so the cluster must not serve the
// prefix while it is restored.
func Restore(ctx context.Context, opts Options, r io.Reader) (*Store, error) {
	s, err := Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Store, error) { s.Close(); return nil, err }
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fail(s.wrap(err))
	}
	if resp.Count > 0 {
		return fail(fmt.Errorf("etcdstore: restore: prefix %q is not empty (%d keys)", s.prefix, resp.Count))
	}
	marker := s.prefix + ".restoring"
	if _, err := s.cli.Put(ctx, marker, ""); err != nil {
		return fail(s.wrap(err))
	}
	var ops []clientv3.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return s.wrap(err)
		}
		ops, size = ops[:0], 0
		return nil
	}
	if _, err := ReadDump(r, func(k, v []byte) error {
		if string(k) == ".restoring" {
			return errors.New("etcdstore: restore: the dump holds a restore marker")
		}
		if size+len(k)+len(v)+len(s.prefix)+32 > s.maxReq/2 || len(ops) >= 64 {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, clientv3.OpPut(s.prefix+string(k), string(v)))
		size += len(k) + len(v) + len(s.prefix) + 32
		return nil
	}); err != nil {
		return fail(err)
	}
	if err := flush(); err != nil {
		return fail(err)
	}
	if _, err := s.cli.Delete(ctx, marker); err != nil {
		return fail(s.wrap(err))
	}
	return s, nil
}

// IsDump reports whether head (a file's first bytes) starts a dump written
// by Snapshot, to tell it from a bbolt file.
func IsDump(head []byte) bool { return bytes.HasPrefix(head, []byte(dumpMagic)) }
