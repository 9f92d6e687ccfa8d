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

	"github.com/keywarden/keywarden/store"
)

// dumpMagic starts a dump:
//
//	"KWETCD1\n" uvarint(revision)
//	{ 0x01 uvarint(len) bucket uvarint(len) key uvarint(len) value }   one per record, in key order
//	0x00 uvarint(count) sha256(every byte before this hash)
const dumpMagic = "KWETCD1\n"

// WriteTo writes every record under the prefix, as of one linearizable
// revision, to w (see the package doc). The records are the sealed values
// as stored: the dump is as secret as the store.
func (s *Store) WriteTo(w io.Writer) (int64, error) {
	return s.Dump(context.Background(), w)
}

// Dump is WriteTo with a context.
func (s *Store) Dump(ctx context.Context, w io.Writer) (int64, error) {
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
			if k == s.fence {
				continue
			}
			rest := k[len(s.prefix):]
			i := strings.IndexByte(rest, '/')
			if i <= 0 {
				return cw.n, fmt.Errorf("etcdstore: unexpected key %q under the prefix", k)
			}
			bw.WriteByte(1)
			field([]byte(rest[:i]))
			field([]byte(rest[i+1:]))
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

// ReadDump reads a dump written by WriteTo, calling fn for each record in
// order, and checks its count and checksum. A damaged or truncated dump is
// an error; records already passed to fn must then be discarded.
func ReadDump(r io.Reader, fn func(b store.Bucket, key, value []byte) error) (DumpInfo, error) {
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
		b, err := field()
		if err != nil {
			return bad("bucket", err)
		}
		k, err := field()
		if err != nil {
			return bad("key", err)
		}
		v, err := field()
		if err != nil {
			return bad("value", err)
		}
		full := append(append(append([]byte{}, b...), '/'), k...)
		if prev != nil && bytes.Compare(full, prev) <= 0 {
			return bad("record", errors.New("records out of order"))
		}
		prev = full
		if err := fn(store.Bucket(b), k, v); err != nil {
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
