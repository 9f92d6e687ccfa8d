package receipt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// SaltSize is the length of an owner hash's salt as [NewOwnerHash] and
// [Entry.SetOwner] make it.
const SaltSize = 16

// Entry is a [Statement] in binary form, as the release path makes it: the
// line hash, owner hash and salt as raw bytes rather than their text
// encodings. [Builder.AddEntry] takes it; the receipt states exactly
// [Entry.Statement], and its leaf and compact encoding are made from the
// raw bytes without decoding text (the receipt work of every release).
type Entry struct {
	Node       string
	Seq        uint64
	Line       [sha256.Size]byte // SHA-256 of the audit line
	Time       string
	Action     string
	Outcome    string
	OwnerHash  [sha256.Size]byte
	Salt       [SaltSize]byte
	Method     string
	KeyVersion string
	RequestID  string

	// stmt, when set, is a statement Builder.Add took that has no binary
	// form (a hash or salt not in its canonical encoding): the receipt is
	// made from it as it is.
	stmt *Statement
}

// SetOwner sets the owner hash of owner under salt (16 random bytes: see
// [NewOwnerHash]).
func (e *Entry) SetOwner(owner string, salt [SaltSize]byte) {
	e.Salt = salt
	e.OwnerHash = hashOwner(owner, salt[:])
}

// Statement is the statement the entry is.
func (e *Entry) Statement() Statement {
	if e.stmt != nil {
		return *e.stmt
	}
	return Statement{
		Node: e.Node, Seq: e.Seq, Line: hex.EncodeToString(e.Line[:]), Time: e.Time,
		Action: e.Action, Outcome: e.Outcome, OwnerHash: b64.EncodeToString(e.OwnerHash[:]),
		Salt: b64.EncodeToString(e.Salt[:]), Method: e.Method, KeyVersion: e.KeyVersion, RequestID: e.RequestID,
	}
}

// entryOf is s as an entry: in binary form when its line hash is lowercase
// hex of 32 bytes and its owner hash and salt canonical base64url of 32
// and 16 bytes (as NewOwnerHash makes them), otherwise carrying s itself.
func entryOf(s Statement) Entry {
	e := Entry{Node: s.Node, Seq: s.Seq, Time: s.Time, Action: s.Action, Outcome: s.Outcome,
		Method: s.Method, KeyVersion: s.KeyVersion, RequestID: s.RequestID}
	var line, oh, salt []byte
	var err error
	if line, err = appendHex(nil, s.Line, sha256.Size); err == nil {
		if oh, err = appendB64(nil, s.OwnerHash, sha256.Size, false); err == nil {
			salt, err = appendB64(nil, s.Salt, SaltSize, false)
		}
	}
	if err != nil {
		e.stmt = &s
		return e
	}
	copy(e.Line[:], line)
	copy(e.OwnerHash[:], oh)
	copy(e.Salt[:], salt)
	return e
}

// leaf is [Statement.Leaf] of the entry's statement, made without
// allocating: the text encodings of the hashes go into a stack buffer.
func (e *Entry) leaf() [sha256.Size]byte {
	if e.stmt != nil {
		return e.stmt.Leaf()
	}
	var buf [640]byte
	b := append(buf[:0], 0) // HashLeaf's prefix
	b = append(b, leafDomain...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	str := func(b []byte, s string) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	b = str(b, e.Node)
	b = binary.BigEndian.AppendUint32(b, 2*sha256.Size)
	b = hex.AppendEncode(b, e.Line[:])
	b = str(b, e.Time)
	b = str(b, e.Action)
	b = str(b, e.Outcome)
	b = binary.BigEndian.AppendUint32(b, uint32(b64.EncodedLen(sha256.Size)))
	b = b64.AppendEncode(b, e.OwnerHash[:])
	b = binary.BigEndian.AppendUint32(b, uint32(b64.EncodedLen(SaltSize)))
	b = b64.AppendEncode(b, e.Salt[:])
	b = str(b, e.Method)
	b = str(b, e.KeyVersion)
	b = str(b, e.RequestID)
	return sha256.Sum256(b)
}

// appendOwnEntry is appendOwn of the entry's statement.
func appendOwnEntry(b []byte, e *Entry, index int, path [][sha256.Size]byte) ([]byte, error) {
	if e.stmt != nil {
		return appendOwn(b, e.stmt, index, path)
	}
	var err error
	if b, err = appendStr(b, e.Node); err != nil {
		return nil, err
	}
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, e.Line[:]...)
	for _, f := range [...]string{e.Time, e.Action, e.Outcome} {
		if b, err = appendStr(b, f); err != nil {
			return nil, err
		}
	}
	b = append(b, e.OwnerHash[:]...)
	b = append(b, SaltSize)
	b = append(b, e.Salt[:]...)
	for _, f := range [...]string{e.Method, e.KeyVersion, e.RequestID} {
		if b, err = appendStr(b, f); err != nil {
			return nil, err
		}
	}
	return appendPath(b, index, path)
}
