package audit

import (
	"encoding/hex"
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendWireLine appends the JSON encoding of w to dst: byte for byte what
// json.Marshal(w) writes (member order, omitempty, map keys sorted, HTML
// and U+2028/U+2029 escaped, invalid UTF-8 as \ufffd), without reflection
// and, for lines without maps, without allocating. The chain hashes these
// bytes, so equality with encoding/json is the contract
// (TestAppendWireLineMatchesJSON, FuzzAppendWireLine). When prev is not
// nil it is written as w.Prev (its hex) without making the string.
func appendWireLine(dst []byte, w *wireLine, prev *[32]byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, w.Seq, 10)
	dst = append(dst, `,"time":`...)
	dst = appendJSONString(dst, w.Time)
	dst = append(dst, `,"prev":`...)
	if prev != nil {
		dst = append(dst, '"')
		dst = hex.AppendEncode(dst, prev[:])
		dst = append(dst, '"')
	} else {
		dst = appendJSONString(dst, w.Prev)
	}
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, w.Type)
	if w.V != 0 {
		dst = append(dst, `,"v":`...)
		dst = strconv.AppendInt(dst, int64(w.V), 10)
	}
	dst = appendMember(dst, `,"action":`, w.Action)
	dst = appendMember(dst, `,"outcome":`, w.Outcome)
	dst = appendMember(dst, `,"actor":`, w.Actor)
	dst = appendMember(dst, `,"owner":`, w.Owner)
	dst = appendMember(dst, `,"method":`, w.Method)
	dst = appendMember(dst, `,"reason":`, w.Reason)
	dst = appendMember(dst, `,"request_id":`, w.RequestID)
	dst = appendMember(dst, `,"remote":`, w.Remote)
	if len(w.Fields) > 0 {
		dst = append(dst, `,"fields":{`...)
		for i, k := range sortedKeys(w.Fields) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, w.Fields[k])
		}
		dst = append(dst, '}')
	}
	if len(w.RefusalsSkipped) > 0 {
		dst = append(dst, `,"refusals_skipped":{`...)
		for i, k := range sortedKeys(w.RefusalsSkipped) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = strconv.AppendUint(dst, w.RefusalsSkipped[k], 10)
		}
		dst = append(dst, '}')
	}
	dst = appendMember(dst, `,"node":`, w.Node)
	dst = appendMember(dst, `,"cert":`, w.Cert)
	dst = appendMember(dst, `,"hmac":`, w.HMAC)
	return append(dst, '}')
}

// appendMember appends an omitempty string member (name includes the
// comma, quotes and colon).
func appendMember(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	return appendJSONString(append(dst, name...), v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

const hexDigits = "0123456789abcdef"

// appendJSONString is encoding/json's string encoding with HTML escaping
// (json.Marshal's default): ", \ and the control characters escaped
// (\b \f \n \r \t by name, the others \u00XX), <, > and & as \u003c,
// \u003e and \u0026, U+2028 and U+2029 as \u2028 and \u2029, each byte of
// invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
