package ingest

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a strict JSON (RFC 8259) reader over a byte slice, written
// because encoding/json is too forgiving for an API edge: it matches keys
// case-insensitively, lets the last of two duplicate keys win, turns invalid
// UTF-8 and lone surrogates into U+FFFD, and reads numbers as float64 (so
// 2^53+1 silently becomes 2^53). The scanner reads values one at a time, so
// the caller decides which keys exist, sees every duplicate and gets numbers
// as their literal text. It refuses, as syntax errors: anything outside the
// grammar, invalid UTF-8, control characters in strings, lone surrogate
// escapes and nesting deeper than maxDepth.
//
// Strings it returns are fresh copies: they never alias the input, which is
// a fasthttp buffer reused after the handler returns.
type scanner struct {
	buf []byte
	pos int
}

// maxDepth bounds the nesting the scanner follows when it skips a value,
// so that a body of "[[[[..." cannot exhaust the stack.
const maxDepth = 32

// syntaxError says where and why the input is not JSON.
type syntaxError struct {
	offset int
	msg    string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at byte %d", e.msg, e.offset) }

func (s *scanner) fail(format string, args ...any) error {
	return &syntaxError{offset: s.pos, msg: fmt.Sprintf(format, args...)}
}

// unexpected reports the byte at pos where want was expected.
func (s *scanner) unexpected(want string) error {
	if s.pos >= len(s.buf) {
		return s.fail("unexpected end of input, want %s", want)
	}
	return s.fail("unexpected %q, want %s", s.buf[s.pos], want)
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.skipSpace()
	if s.pos >= len(s.buf) {
		return 0
	}
	return s.buf[s.pos]
}

// atEnd reports whether only whitespace is left.
func (s *scanner) atEnd() bool {
	s.skipSpace()
	return s.pos == len(s.buf)
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return s.unexpected(fmt.Sprintf("%q", c))
	}
	s.pos++
	return nil
}

// object reads an object, calling member for each key with the scanner
// positioned at the value, which member must consume.
func (s *scanner) object(member func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.unexpected("an object key")
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.unexpected("',' or '}'")
		}
	}
}

// array reads an array, calling elem for each element (i counts from 0)
// with the scanner positioned at it; elem must consume it.
func (s *scanner) array(elem func(i int) error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.unexpected("',' or ']'")
		}
	}
}

// skipValue reads and discards one value of any type, checking its syntax.
func (s *scanner) skipValue(depth int) error {
	if depth > maxDepth {
		return s.fail("nesting deeper than %d", maxDepth)
	}
	switch c := s.peek(); {
	case c == '"':
		_, err := s.str()
		return err
	case c == '{':
		return s.object(func(string) error { return s.skipValue(depth + 1) })
	case c == '[':
		return s.array(func(int) error { return s.skipValue(depth + 1) })
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, _, err := s.number()
		return err
	}
	return s.unexpected("a JSON value")
}

func (s *scanner) literal(lit string) error {
	if len(s.buf)-s.pos < len(lit) || string(s.buf[s.pos:s.pos+len(lit)]) != lit {
		return s.unexpected(lit)
	}
	s.pos += len(lit)
	return nil
}

// number reads a number and returns its literal text (aliasing the input)
// and whether it is an integer literal: no fraction and no exponent.
func (s *scanner) number() (lit []byte, integer bool, err error) {
	s.skipSpace()
	start := s.pos
	if s.pos < len(s.buf) && s.buf[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(s.buf) && s.buf[s.pos] == '0':
		s.pos++
	case s.pos < len(s.buf) && s.buf[s.pos] >= '1' && s.buf[s.pos] <= '9':
		s.digits()
	default:
		return nil, false, s.unexpected("a digit")
	}
	integer = true
	if s.pos < len(s.buf) && s.buf[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return nil, false, s.unexpected("a digit after '.'")
		}
		integer = false
	}
	if s.pos < len(s.buf) && (s.buf[s.pos] == 'e' || s.buf[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.buf) && (s.buf[s.pos] == '+' || s.buf[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return nil, false, s.unexpected("a digit in the exponent")
		}
		integer = false
	}
	return s.buf[start:s.pos], integer, nil
}

func (s *scanner) digits() int {
	start := s.pos
	for s.pos < len(s.buf) && s.buf[s.pos] >= '0' && s.buf[s.pos] <= '9' {
		s.pos++
	}
	return s.pos - start
}

// str reads a string and returns it unescaped, as a fresh copy.
func (s *scanner) str() (string, error) {
	if err := s.expect('"'); err != nil {
		return "", err
	}
	start := s.pos
	// Fast path: plain ASCII without escapes, the common case, is copied once.
	for s.pos < len(s.buf) {
		c := s.buf[s.pos]
		if c == '"' {
			v := string(s.buf[start:s.pos])
			s.pos++
			return v, nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		s.pos++
	}
	out := make([]byte, s.pos-start, s.pos-start+16)
	copy(out, s.buf[start:s.pos])
	for {
		if s.pos >= len(s.buf) {
			return "", s.fail("unterminated string")
		}
		switch c := s.buf[s.pos]; {
		case c == '"':
			s.pos++
			return string(out), nil
		case c < 0x20:
			return "", s.fail("control character %#02x in a string (escape it)", c)
		case c == '\\':
			r, err := s.escape()
			if err != nil {
				return "", err
			}
			out = utf8.AppendRune(out, r)
		case c < utf8.RuneSelf:
			out = append(out, c)
			s.pos++
		default:
			// DecodeRune also refuses overlong forms and UTF-8 encoded surrogates.
			r, size := utf8.DecodeRune(s.buf[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", s.fail("invalid UTF-8")
			}
			out = append(out, s.buf[s.pos:s.pos+size]...)
			s.pos += size
		}
	}
}

// escape reads one escape sequence at pos (which holds the backslash).
func (s *scanner) escape() (rune, error) {
	if s.pos+1 >= len(s.buf) {
		return 0, s.fail("unterminated escape")
	}
	c := s.buf[s.pos+1]
	s.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := s.hex4()
		if err != nil || !utf16.IsSurrogate(r) {
			return r, err
		}
		// A surrogate must be a high one followed by an escaped low one:
		// encoding/json would quietly turn anything else into U+FFFD.
		if r >= 0xDC00 || s.pos+1 >= len(s.buf) || s.buf[s.pos] != '\\' || s.buf[s.pos+1] != 'u' {
			return 0, s.fail("unpaired UTF-16 surrogate escape")
		}
		s.pos += 2
		lo, err := s.hex4()
		if err != nil {
			return 0, err
		}
		if lo < 0xDC00 || lo > 0xDFFF {
			return 0, s.fail("unpaired UTF-16 surrogate escape")
		}
		return utf16.DecodeRune(r, lo), nil
	}
	s.pos--
	return 0, s.fail("invalid escape character %q", c)
}

func (s *scanner) hex4() (rune, error) {
	if len(s.buf)-s.pos < 4 {
		return 0, s.fail("short \\u escape")
	}
	var r rune
	for _, c := range s.buf[s.pos : s.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, s.fail("invalid \\u escape")
		}
	}
	s.pos += 4
	return r, nil
}
