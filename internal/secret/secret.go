// Package secret holds the one type Keywarden uses for secret bytes and
// strings. Its String, GoString, Format, LogValue and MarshalJSON methods
// all redact, so a secret cannot reach a log line, an error message, a panic
// or a config dump by accident. Call [Bytes.Reveal] (or [String.Reveal]) at
// the one place that needs the value, and [Bytes.Wipe] when done.
package secret

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

const redacted = "[redacted]"

// Bytes is secret key material. The zero value is empty.
type Bytes struct{ b []byte }

// NewBytes takes ownership of b.
func NewBytes(b []byte) Bytes { return Bytes{b: b} }

// CopyBytes copies b, so the caller may wipe its own slice.
func CopyBytes(b []byte) Bytes { return Bytes{b: append([]byte(nil), b...)} }

// Reveal returns the secret. The slice aliases the secret: do not keep it.
func (s Bytes) Reveal() []byte { return s.b }

// Len is the length of the secret in bytes (not secret itself).
func (s Bytes) Len() int { return len(s.b) }

// Equal compares in constant time.
func (s Bytes) Equal(o Bytes) bool { return subtle.ConstantTimeCompare(s.b, o.b) == 1 }

// Wipe overwrites the secret with zeros.
func (s Bytes) Wipe() { clear(s.b) }

func (Bytes) String() string                { return redacted }
func (Bytes) GoString() string              { return redacted }
func (Bytes) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (Bytes) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }
func (Bytes) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (Bytes) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }

// String is a secret string such as an API key, a token or a password from
// configuration. Its zero value is empty.
type String struct{ s string }

// NewString wraps s.
func NewString(s string) String { return String{s: s} }

// Reveal returns the secret.
func (s String) Reveal() string { return s.s }

// IsZero reports whether the secret is empty (not secret itself).
func (s String) IsZero() bool { return s.s == "" }

func (String) String() string                { return redacted }
func (String) GoString() string              { return redacted }
func (String) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (String) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }
func (String) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (String) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }

// UnmarshalText lets configuration decoders fill a String.
func (s *String) UnmarshalText(b []byte) error { s.s = string(b); return nil }

// UnmarshalYAML-compatible decoders use UnmarshalText.
