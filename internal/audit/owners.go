package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// OwnerEvent is one audit line about an owner's records, as the owner may
// see it: what happened, when, and the line's place in the hash chain (its
// seq and SHA-256), by which the line — and the signed anchor after it —
// can be found in any copy of the log. Who asked (actor) and from where
// (remote) are left out: a refusal's address may be someone else's.
type OwnerEvent struct {
	Seq        uint64 `json:"seq"`
	Line       string `json:"line"` // hex SHA-256 of the audit line
	Time       string `json:"time"`
	Action     string `json:"action"`
	Outcome    string `json:"outcome,omitempty"`
	Method     string `json:"method,omitempty"`
	Reason     string `json:"reason,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	KeyVersion string `json:"key_version,omitempty"`
}

// OwnerIndex finds an owner's lines in the audit directory. It reads the
// files themselves, never the writer's state: it costs the writer
// nothing. The first query reads every file once; each later query reads
// only what was appended since, so retention is the log's own (a removed
// file's lines are no longer listed). Safe for concurrent use.
type OwnerIndex struct {
	dir string

	mu   sync.Mutex
	file int   // index of the file read last
	off  int64 // bytes of it read (complete lines only)
	refs map[string][]ownerRef
}

type ownerRef struct {
	file int
	off  int64
	n    int32
}

// NewOwnerIndex indexes the audit directory dir.
func NewOwnerIndex(dir string) *OwnerIndex {
	return &OwnerIndex{dir: dir, refs: map[string][]ownerRef{}}
}

// Events returns the owner's events, newest first, at most limit (and only
// those with a seq below before, when before > 0).
func (x *OwnerIndex) Events(owner string, limit int, before uint64) ([]OwnerEvent, error) {
	if owner == "" || limit <= 0 {
		return nil, nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.refresh(); err != nil {
		return nil, err
	}
	refs := x.refs[owner]
	open := map[int]*os.File{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	var out []OwnerEvent
	var gone []int
	for i := len(refs) - 1; i >= 0 && len(out) < limit; i-- {
		r := refs[i]
		f, ok := open[r.file]
		if !ok {
			var err error
			if f, err = os.Open(filepath.Join(x.dir, fileName(r.file))); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					gone = append(gone, i) // removed for retention
					continue
				}
				return nil, err
			}
			open[r.file] = f
		}
		line := make([]byte, r.n)
		if _, err := f.ReadAt(line, r.off); err != nil {
			return nil, err
		}
		var v struct {
			Seq       uint64            `json:"seq"`
			Time      string            `json:"time"`
			Action    string            `json:"action"`
			Outcome   string            `json:"outcome"`
			Owner     string            `json:"owner"`
			Method    string            `json:"method"`
			Reason    string            `json:"reason"`
			RequestID string            `json:"request_id"`
			Fields    map[string]string `json:"fields"`
		}
		if json.Unmarshal(line, &v) != nil || v.Owner != owner {
			continue // the file changed under the index: never show another owner's line
		}
		if before > 0 && v.Seq >= before {
			continue
		}
		sum := sha256.Sum256(line)
		out = append(out, OwnerEvent{Seq: v.Seq, Line: hex.EncodeToString(sum[:]), Time: v.Time, Action: v.Action,
			Outcome: v.Outcome, Method: v.Method, Reason: v.Reason, RequestID: v.RequestID, KeyVersion: v.Fields["key_version"]})
	}
	if len(gone) > 0 {
		x.refs[owner] = slices.DeleteFunc(refs, func(r ownerRef) bool {
			_, err := os.Stat(filepath.Join(x.dir, fileName(r.file)))
			return errors.Is(err, os.ErrNotExist)
		})
	}
	return out, nil
}

var ownerKey = []byte(`"owner":"`)

// refresh reads the complete lines appended since the last call.
func (x *OwnerIndex) refresh() error {
	files, err := listFiles(x.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, af := range files {
		if af.index < x.file {
			continue
		}
		if af.index > x.file {
			x.file, x.off = af.index, 0
		}
		f, err := os.Open(filepath.Join(x.dir, af.name))
		if err != nil {
			return err
		}
		if _, err := f.Seek(x.off, io.SeekStart); err != nil {
			f.Close()
			return err
		}
		br := bufio.NewReaderSize(f, MaxLineBytes)
		for {
			raw, err := br.ReadSlice('\n')
			if err != nil {
				break // EOF or a partial last line (being written): read it next time
			}
			line := raw[:len(raw)-1]
			if bytes.Contains(line, ownerKey) {
				var v struct {
					Owner string `json:"owner"`
				}
				if json.Unmarshal(line, &v) == nil && v.Owner != "" {
					x.refs[v.Owner] = append(x.refs[v.Owner], ownerRef{file: af.index, off: x.off, n: int32(len(line))})
				}
			}
			x.off += int64(len(raw))
		}
		f.Close()
	}
	return nil
}
