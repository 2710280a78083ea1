package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Version is the stream header version this package speaks. See SPEC.md.
const Version = 1

// MaxTargetLen bounds the target name in a stream header, and MaxMessageLen
// the message in a reply, so a peer cannot make the other side allocate much.
const (
	MaxTargetLen  = 253
	MaxMessageLen = 1024
)

// Code is the result an agent reports in a stream reply. Its String form is
// used as the "reason" label of error metrics.
type Code uint8

// The reply codes; SPEC.md lists them with their meaning. Values are wire
// format: never renumber.
const (
	CodeOK                 Code = 0
	CodeUnsupportedVersion Code = 1
	CodeMalformedHeader    Code = 2
	CodeTargetNotAllowed   Code = 3
	CodeDialFailed         Code = 4
	CodeTooManyStreams     Code = 5
	CodeShuttingDown       Code = 6
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeUnsupportedVersion:
		return "unsupported_version"
	case CodeMalformedHeader:
		return "malformed_header"
	case CodeTargetNotAllowed:
		return "target_not_allowed"
	case CodeDialFailed:
		return "dial_failed"
	case CodeTooManyStreams:
		return "too_many_streams"
	case CodeShuttingDown:
		return "shutting_down"
	default:
		return fmt.Sprintf("code_%d", uint8(c))
	}
}

// StreamError is returned by Session.Open when the agent refused a stream.
// Check for it with errors.As; Code says why.
type StreamError struct {
	Target  string
	Code    Code
	Message string // the agent's explanation
	// Version is the stream header version the agent speaks (its reply's
	// byte 0). With CodeUnsupportedVersion the relay may retry in it.
	Version uint8
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("tunnel: agent refused stream to %q: %s: %s", e.Target, e.Code, e.Message)
}

// errMalformed reports a stream header that does not parse.
var errMalformed = errors.New("malformed stream header")

// validTarget reports whether name may appear in a header: 1..MaxTargetLen
// printable ASCII bytes without spaces.
func validTarget(name string) bool {
	if len(name) == 0 || len(name) > MaxTargetLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// appendRequest appends the request header that opens a stream to target.
//
//	version(1) flags(1) len(2, big endian) target(len)
func appendRequest(b []byte, target string) []byte {
	b = append(b, Version, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(target)))
	return append(b, target...)
}

// readRequest reads a request header. A version other than Version is
// returned with errMalformed unset so that the caller can answer
// CodeUnsupportedVersion.
func readRequest(r io.Reader) (version uint8, target string, err error) {
	var fixed [4]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return 0, "", fmt.Errorf("%w: %w", errMalformed, err)
	}
	version = fixed[0]
	if version != Version {
		return version, "", nil
	}
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if n == 0 || n > MaxTargetLen {
		return version, "", fmt.Errorf("%w: target length %d not in 1..%d", errMalformed, n, MaxTargetLen)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // a header cut short, not a stream closed before one
		}
		return version, "", fmt.Errorf("%w: %w", errMalformed, err)
	}
	target = string(buf)
	if !validTarget(target) {
		return version, "", fmt.Errorf("%w: target name has bytes outside printable ASCII", errMalformed)
	}
	return version, target, nil
}

// appendReply appends the agent's reply to a request header.
//
//	version(1) code(1) len(2, big endian) message(len)
//
// The message is UTF-8 (SPEC.md): invalid bytes, e.g. from an upstream's
// error, are replaced, and a message over MaxMessageLen is cut at the last
// whole rune that fits.
func appendReply(b []byte, code Code, msg string) []byte {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > MaxMessageLen {
		cut := MaxMessageLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	b = append(b, Version, byte(code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// readReply reads the agent's reply.
func readReply(r io.Reader) (version uint8, code Code, msg string, err error) {
	var fixed [4]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return 0, 0, "", err
	}
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if n > MaxMessageLen {
		return fixed[0], 0, "", fmt.Errorf("%w: reply message length %d over %d", errMalformed, n, MaxMessageLen)
	}
	var buf []byte
	if n > 0 {
		buf = make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return fixed[0], 0, "", err
		}
	}
	return fixed[0], Code(fixed[1]), string(buf), nil
}
