package store

// # Copy between stores
//
// Copy moves every record of one store into another, whatever their
// backends (keywarden store migrate: bbolt → etcd and back; recover: an
// etcd dump into a bbolt file). Values are copied as they are: nothing is
// opened or sealed again, so the rollback record's digest of the records
// stays valid on the destination. Summarize is the check of a copy: a
// count per bucket and a SHA-256 over every (bucket, key, value) in
// bucket-name then key order, computed on each side.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// ErrNotEmpty: the destination of [Copy] holds records and the copy was
// not told to replace them.
var ErrNotEmpty = errors.New("store: the destination is not empty")

// ErrCopyMismatch: after [Copy] the destination's summary differs from the
// source's.
var ErrCopyMismatch = errors.New("store: the copy does not match its source")

// Summary is a store's record count per bucket and a SHA-256 over the
// stream of every record: for each bucket in name order, for each key in
// byte order, uvarint(len) ‖ bucket ‖ uvarint(len) ‖ key ‖ uvarint(len) ‖
// value. Two stores with equal summaries hold the same records.
type Summary struct {
	Counts map[Bucket]uint64
	Total  uint64
	SHA256 [sha256.Size]byte
}

// Equal reports whether s and o describe the same records.
func (s Summary) Equal(o Summary) bool {
	if s.Total != o.Total || s.SHA256 != o.SHA256 || len(s.Counts) != len(o.Counts) {
		return false
	}
	for b, n := range s.Counts {
		if o.Counts[b] != n {
			return false
		}
	}
	return true
}

// SkipFunc selects records a copy leaves out (and its summaries ignore);
// nil leaves nothing out.
type SkipFunc func(b Bucket, key []byte) bool

// Summarize computes db's summary in one read transaction.
func (db *DB) Summarize(ctx context.Context, skip SkipFunc) (Summary, error) {
	if db.closed.Load() {
		return Summary{}, ErrClosed
	}
	var s Summary
	err := db.b.View(ctx, func(tx BackendTx) error {
		s = Summary{Counts: map[Bucket]uint64{}}
		h := sha256.New()
		for _, b := range Buckets() {
			s.Counts[b] = 0
			err := tx.ForEach(b, nil, func(k, v []byte) error {
				if skip != nil && skip(b, k) {
					return nil
				}
				hashRecord(h, b, k, v)
				s.Counts[b]++
				s.Total++
				return nil
			})
			if err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		copy(s.SHA256[:], h.Sum(nil))
		return nil
	})
	return s, err
}

func hashRecord(h hash.Hash, b Bucket, k, v []byte) {
	var num [binary.MaxVarintLen64]byte
	for _, f := range [][]byte{[]byte(b), k, v} {
		h.Write(num[:binary.PutUvarint(num[:], uint64(len(f)))])
		h.Write(f)
	}
}

// CopyOptions configure [Copy].
type CopyOptions struct {
	// Skip leaves records out of the copy and of both summaries.
	Skip SkipFunc
	// Replace clears a destination that holds records before the copy;
	// without it such a destination is refused with ErrNotEmpty.
	Replace bool
	// BatchRecords and BatchBytes bound one write transaction of the
	// destination (an etcd transaction is one request: keep it under the
	// server's --max-txn-ops and --max-request-bytes). Zero: 100 records,
	// 512 KiB.
	BatchRecords int
	BatchBytes   int
}

// CopyReport is what [Copy] did.
type CopyReport struct {
	Source, Destination Summary
	Cleared             uint64 // records removed from the destination first (Replace)
}

// Copy writes every record of src into dst (both at this build's schema;
// open src read-only), in write transactions of at most BatchRecords
// records, then summarizes both and returns ErrCopyMismatch when they
// differ. The source is read in one transaction: nothing may write it
// meanwhile (the node is stopped). No ledger sees the writes: the records
// and the rollback record arrive as they were.
func Copy(ctx context.Context, dst, src *DB, opts CopyOptions) (CopyReport, error) {
	var rep CopyReport
	if opts.BatchRecords <= 0 {
		opts.BatchRecords = 100
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 512 << 10
	}
	if dst.closed.Load() || src.closed.Load() {
		return rep, ErrClosed
	}
	before, err := dst.Summarize(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("store: copy: read the destination: %w", err)
	}
	if before.Total > 0 {
		if !opts.Replace {
			return rep, fmt.Errorf("%w (%d records)", ErrNotEmpty, before.Total)
		}
		n, err := clearAll(ctx, dst, opts)
		if err != nil {
			return rep, fmt.Errorf("store: copy: clear the destination: %w", err)
		}
		rep.Cleared = n
	}

	type rec struct {
		b    Bucket
		k, v []byte
	}
	var batch []rec
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.b.Update(ctx, func(tx BackendTx) error {
			for _, r := range batch {
				if err := tx.Put(r.b, r.k, r.v); err != nil {
					return err
				}
			}
			return nil
		})
		batch, size = batch[:0], 0
		return err
	}
	err = src.b.View(ctx, func(tx BackendTx) error {
		for _, b := range Buckets() {
			err := tx.ForEach(b, nil, func(k, v []byte) error {
				if opts.Skip != nil && opts.Skip(b, k) {
					return nil
				}
				if len(batch) >= opts.BatchRecords || (len(batch) > 0 && size+len(k)+len(v) > opts.BatchBytes) {
					if err := flush(); err != nil {
						return err
					}
				}
				batch = append(batch, rec{b, bytes.Clone(k), bytes.Clone(v)})
				if batch[len(batch)-1].v == nil {
					batch[len(batch)-1].v = []byte{}
				}
				size += len(b) + len(k) + len(v) + 32
				return nil
			})
			if err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		return flush()
	})
	if err != nil {
		return rep, fmt.Errorf("store: copy: %w", err)
	}
	if rep.Source, err = src.Summarize(ctx, opts.Skip); err != nil {
		return rep, fmt.Errorf("store: copy: summarize the source: %w", err)
	}
	if rep.Destination, err = dst.Summarize(ctx, opts.Skip); err != nil {
		return rep, fmt.Errorf("store: copy: summarize the destination: %w", err)
	}
	if !rep.Source.Equal(rep.Destination) {
		return rep, fmt.Errorf("%w: source %d records %x, destination %d records %x", ErrCopyMismatch,
			rep.Source.Total, rep.Source.SHA256, rep.Destination.Total, rep.Destination.SHA256)
	}
	return rep, nil
}

// clearAll deletes every record of db, in batches.
func clearAll(ctx context.Context, db *DB, opts CopyOptions) (uint64, error) {
	var total uint64
	for _, b := range Buckets() {
		for {
			var keys [][]byte
			err := db.b.View(ctx, func(tx BackendTx) error {
				keys = keys[:0]
				errFull := errors.New("full")
				err := tx.ForEach(b, nil, func(k, _ []byte) error {
					keys = append(keys, bytes.Clone(k))
					if len(keys) >= opts.BatchRecords {
						return errFull
					}
					return nil
				})
				if errors.Is(err, errFull) {
					return nil
				}
				return err
			})
			if err != nil {
				return total, err
			}
			if len(keys) == 0 {
				break
			}
			err = db.b.Update(ctx, func(tx BackendTx) error {
				for _, k := range keys {
					if err := tx.Delete(b, k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return total, err
			}
			total += uint64(len(keys))
		}
	}
	return total, nil
}
