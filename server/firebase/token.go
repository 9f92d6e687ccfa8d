package firebase

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/keywarden/keywarden/internal/apierr"
)

// Size limits on the raw token.
const (
	// MaxTokenSize is the largest token accepted, in bytes. Firebase ID
	// tokens are 1–2 KiB, up to about 3 KiB with custom claims.
	MaxTokenSize = 8 << 10
	// MaxHeaderSize is the largest encoded header segment accepted. Google's
	// headers are about 100 bytes.
	MaxHeaderSize = 1 << 10
	// maxKidLen bounds the key id. Google's are 40 hex digits.
	maxKidLen = 128
	// maxJSONDepth bounds the nesting of header and claims.
	maxJSONDepth = 16
)

var b64 = base64.RawURLEncoding.Strict()

// jsonObject is a JSON object whose member names are unique and matched
// exactly (encoding/json's struct decoding folds case, which would let
// "AUD" stand in for "aud").
type jsonObject map[string]json.RawMessage

// parsedToken is a token that passed the structural checks. Nothing in it
// is authenticated until the signature is checked.
type parsedToken struct {
	kid          string
	claims       jsonObject
	signingInput string // header.claims, as signed
	signature    []byte
}

// parseToken makes the structural checks, in this order: present, size,
// alphabet, three segments, header size, header (base64url, JSON object,
// unique names), alg, crit, kid, claims (base64url, JSON object, unique
// names), signature present and base64url.
// tokenChar marks the bytes a token may hold: base64url and the dot.
var tokenChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	return t
}()

func parseToken(raw string) (*parsedToken, *apierr.Error) {
	if raw == "" {
		return nil, ErrTokenMissing
	}
	if len(raw) > MaxTokenSize {
		return nil, ErrTokenTooLarge.WithMessage("the Firebase ID token is %d bytes; at most %d are accepted", len(raw), MaxTokenSize)
	}
	// Only the base64url alphabet and dots: Go's base64 decoder skips CR and
	// LF even in strict mode, and padding or white space would let two
	// different strings stand for one token.
	for i := 0; i < len(raw); i++ {
		if !tokenChar[raw[i]] {
			return nil, ErrTokenMalformed.WithMessage("the Firebase ID token contains a character outside base64url (at byte %d); send the bare token after \"Bearer \"", i)
		}
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, ErrTokenMalformed.WithMessage("a Firebase ID token has 3 dot-separated segments; this one has %d", len(parts))
	}
	if len(parts[0]) > MaxHeaderSize {
		return nil, ErrTokenTooLarge.WithMessage("the Firebase ID token's header is %d bytes; at most %d are accepted", len(parts[0]), MaxHeaderSize)
	}
	header, err := decodeSegment(parts[0])
	if err != nil {
		return nil, ErrTokenMalformed.WithMessage("the Firebase ID token's header is not valid: %v", err).Wrap(err)
	}

	alg, ok, err := header.str("alg")
	switch {
	case err != nil || !ok:
		return nil, ErrTokenAlg.WithMessage("the Firebase ID token's header names no algorithm (alg); Firebase ID tokens use RS256")
	case alg != "RS256":
		return nil, ErrTokenAlg.WithMessage("the Firebase ID token is signed with %s; Firebase ID tokens use RS256", quote(alg))
	}
	if _, ok := header["crit"]; ok {
		return nil, ErrTokenMalformed.WithMessage("the Firebase ID token's header has critical extensions (crit), which are not supported")
	}
	kid, ok, err := header.str("kid")
	switch {
	case err != nil:
		return nil, ErrTokenMalformed.WithMessage("the Firebase ID token's kid is not a string")
	case !ok || kid == "":
		return nil, ErrTokenKidUnknown.WithMessage("the Firebase ID token's header names no key id (kid); is this a Firebase custom token rather than an ID token?")
	case len(kid) > maxKidLen:
		return nil, ErrTokenKidUnknown.WithMessage("the Firebase ID token's key id (kid) is longer than %d bytes", maxKidLen)
	}

	claims, err := decodeSegment(parts[1])
	if err != nil {
		return nil, ErrTokenMalformed.WithMessage("the Firebase ID token's claims are not valid: %v", err).Wrap(err)
	}
	if parts[2] == "" {
		return nil, ErrTokenSignature.WithMessage("the Firebase ID token is not signed")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, ErrTokenMalformed.WithMessage("the Firebase ID token's signature is not base64url").Wrap(err)
	}
	return &parsedToken{kid: kid, claims: claims, signingInput: raw[:len(parts[0])+1+len(parts[1])], signature: sig}, nil
}

var (
	errNotBase64     = errors.New("not base64url")
	errNotUTF8       = errors.New("not UTF-8")
	errNotObject     = errors.New("not a JSON object")
	errTrailingData  = errors.New("data after the JSON object")
	errTooDeep       = errors.New("JSON nested too deeply")
	errDuplicateName = errors.New("duplicate member name")
)

func decodeSegment(seg string) (jsonObject, error) {
	data, err := b64.DecodeString(seg)
	if err != nil {
		return nil, errNotBase64
	}
	return decodeObject(data)
}

// decodeObject decodes one JSON object into its members, refusing invalid
// JSON, invalid UTF-8 (which encoding/json would quietly replace), duplicate
// member names at any depth (compared after unescaping, so "aud" and
// "\u0061ud" are duplicates), nesting deeper than maxJSONDepth and trailing
// data. Member values are not copied: they alias data.
func decodeObject(data []byte) (jsonObject, error) {
	if !utf8.Valid(data) {
		return nil, errNotUTF8
	}
	if !json.Valid(data) {
		return nil, errNotObject
	}
	sc := scanner{data: data}
	sc.space()
	if sc.pos >= len(data) || data[sc.pos] != '{' {
		return nil, errNotObject
	}
	obj := jsonObject{}
	if err := sc.object(1, obj); err != nil {
		return nil, err
	}
	sc.space()
	if sc.pos != len(data) {
		return nil, errTrailingData // unreachable after json.Valid; kept for clarity
	}
	return obj, nil
}

// scanner walks JSON that json.Valid has accepted, so it checks only what
// json.Valid does not: duplicate names and depth.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// object reads an object starting at '{'. When into is not nil the members
// are stored there; otherwise (a nested object) the names are only checked
// for duplicates, without a map for small objects.
func (s *scanner) object(depth int, into jsonObject) error {
	if depth > maxJSONDepth {
		return errTooDeep
	}
	var seen [][]byte // names of a nested object, up to smallObject of them
	s.pos++           // '{'
	s.space()
	if s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	for {
		if into == nil && len(seen) < smallObject {
			name := s.nameBytes()
			for _, n := range seen {
				if bytes.Equal(n, name) {
					return fmt.Errorf("%w %s", errDuplicateName, quote(string(name)))
				}
			}
			seen = append(seen, name)
			s.space()
			s.pos++ // ':'
			s.space()
			if err := s.value(depth); err != nil {
				return err
			}
		} else {
			if into == nil { // a large nested object: a map from here on
				into = make(jsonObject, 2*smallObject)
				for _, n := range seen {
					into[string(n)] = nil
				}
			}
			name := s.name()
			if _, dup := into[name]; dup {
				return fmt.Errorf("%w %s", errDuplicateName, quote(name))
			}
			s.space()
			s.pos++ // ':'
			s.space()
			start := s.pos
			if err := s.value(depth); err != nil {
				return err
			}
			into[name] = json.RawMessage(s.data[start:s.pos])
		}
		s.space()
		if s.data[s.pos] == '}' {
			s.pos++
			return nil
		}
		s.pos++ // ','
		s.space()
	}
}

// smallObject is the number of member names a nested object's duplicate
// check compares pairwise before it takes a map.
const smallObject = 16

// nameBytes reads a member name: the bytes between the quotes, or the
// unescaped name when it has an escape.
func (s *scanner) nameBytes() []byte {
	start := s.pos
	escaped := s.skipString()
	raw := s.data[start:s.pos]
	if !escaped {
		return raw[1 : len(raw)-1]
	}
	var name string
	_ = json.Unmarshal(raw, &name) // valid JSON: cannot fail
	return []byte(name)
}

// name reads a member name, unescaping it when needed.
func (s *scanner) name() string {
	start := s.pos
	escaped := s.skipString()
	raw := s.data[start:s.pos]
	if !escaped {
		return string(raw[1 : len(raw)-1])
	}
	var name string
	_ = json.Unmarshal(raw, &name) // valid JSON: cannot fail
	return name
}

// skipString moves past a string starting at '"' and reports whether it
// contains an escape.
func (s *scanner) skipString() (escaped bool) {
	s.pos++
	for {
		switch s.data[s.pos] {
		case '\\':
			escaped = true
			s.pos += 2
		case '"':
			s.pos++
			return escaped
		default:
			s.pos++
		}
	}
}

// value moves past any value.
func (s *scanner) value(depth int) error {
	switch s.data[s.pos] {
	case '{':
		return s.object(depth+1, nil)
	case '[':
		if depth+1 > maxJSONDepth {
			return errTooDeep
		}
		s.pos++
		s.space()
		if s.data[s.pos] == ']' {
			s.pos++
			return nil
		}
		for {
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			if s.data[s.pos] == ']' {
				s.pos++
				return nil
			}
			s.pos++ // ','
			s.space()
		}
	case '"':
		s.skipString()
	default: // number, true, false, null
		for s.pos < len(s.data) && !strings.ContainsRune(",]} \t\n\r", rune(s.data[s.pos])) {
			s.pos++
		}
	}
	return nil
}

// errWrongType reports a member of the wrong JSON type.
var errWrongType = errors.New("wrong JSON type")

// str returns a string member; ok is false when absent.
func (o jsonObject) str(name string) (s string, ok bool, err error) {
	raw, ok := o[name]
	if !ok {
		return "", false, nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", true, errWrongType
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		// No escape: the value is the bytes between the quotes (decodeObject
		// has checked that the JSON is valid and the bytes UTF-8).
		return string(raw[1 : len(raw)-1]), true, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, errWrongType
	}
	return s, true, nil
}

// maxUnix bounds time claims (the year 9999) so that adding the leeway
// cannot overflow.
const maxUnix = 253402300799

// unix returns an integer time member in seconds; ok is false when absent.
// Fractions, exponents, negative numbers and other types are refused.
func (o jsonObject) unix(name string) (v int64, ok bool, err error) {
	raw, ok := o[name]
	if !ok {
		return 0, false, nil
	}
	v, err = strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v < 0 || v > maxUnix {
		return 0, true, errWrongType
	}
	return v, true, nil
}

// boolean returns a boolean member; ok is false when absent.
func (o jsonObject) boolean(name string) (v bool, ok bool, err error) {
	raw, ok := o[name]
	if !ok {
		return false, false, nil
	}
	switch string(raw) {
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	}
	return false, true, errWrongType
}

// object returns an object member; ok is false when absent.
func (o jsonObject) object(name string) (obj jsonObject, ok bool, err error) {
	raw, ok := o[name]
	if !ok {
		return nil, false, nil
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, true, errWrongType
	}
	// raw is a member of an object decodeObject accepted: valid JSON, UTF-8,
	// unique names at every depth. Only its members are read again.
	obj = jsonObject{}
	sc := scanner{data: raw}
	if err := sc.object(1, obj); err != nil {
		return nil, true, errWrongType
	}
	return obj, true, nil
}

// quote quotes an untrusted value for a public message, cut to 64 bytes.
// It never sees the token itself.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}
