package ingest

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// scanner reads a request body one JSON value at a time over a
// jsontext.Decoder, so that the caller decides which keys exist, sees every
// duplicate and gets numbers as their literal text. encoding/json is too
// forgiving for an API edge: it matches keys case-insensitively, lets the last
// of two duplicate keys win, turns invalid UTF-8 and lone surrogates into
// U+FFFD, and reads numbers as float64 (so 2^53+1 silently becomes 2^53).
// jsontext refuses, as syntax errors, anything outside RFC 8259, invalid
// UTF-8, control characters in strings and lone surrogate escapes;
// skipValue refuses nesting deeper than maxDepth.
//
// Duplicate names are left to the caller (AllowDuplicateNames): jsontext
// would stop at the second name with a syntax error, which loses the answer
// that names the field, the other broken rules of the same body, and the
// rule that one bad order of a batch rejects only itself. Every key an order
// may hold is checked for a repeat by the decoders, so nothing with a
// duplicate name is accepted either way.
//
// A scanner made by newScanner borrows a pooled decoder until release; the
// zero value with buf set makes its own on first use. Strings it returns are
// fresh copies: they never alias buf, which is a fasthttp buffer reused after
// the handler returns. A scanner is not safe for concurrent use.
type scanner struct {
	buf    []byte
	dec    *jsontext.Decoder
	pooled *pooledDecoder
}

// pooledDecoder is a decoder with the reader it parses in place.
type pooledDecoder struct {
	dec jsontext.Decoder
	in  bytes.Buffer
}

// decoders keeps decoders and their state stacks between requests, so that
// a request does not allocate them anew. It holds no request data: release
// empties a decoder before putting it back.
var decoders = sync.Pool{New: func() any { return new(pooledDecoder) }}

// newScanner returns a scanner over data with a pooled decoder; the caller
// must release it when done with the values it read.
func newScanner(data []byte) scanner {
	p := decoders.Get().(*pooledDecoder)
	p.in = *bytes.NewBuffer(data)
	p.dec.Reset(&p.in, decoderOptions...)
	return scanner{buf: data, dec: &p.dec, pooled: p}
}

// release returns a pooled decoder, emptied, for the next request.
func (s *scanner) release() {
	if p := s.pooled; p != nil {
		p.in = bytes.Buffer{}
		p.dec.Reset(&p.in, decoderOptions...)
		decoders.Put(p)
		s.pooled, s.dec = nil, nil
	}
}

// maxDepth bounds the nesting of a body, counted from its top-level value:
// an order needs 3, and the bound keeps a body of "[[[[..." cheap to refuse.
const maxDepth = 32

// decoderOptions are the options of every scanner's decoder; the other
// defaults of jsontext (valid UTF-8, RFC 8259 grammar) are what the edge wants.
var decoderOptions = []jsontext.Options{jsontext.AllowDuplicateNames(true)}

// d returns the decoder over buf, creating it on first use. A bytes.Buffer
// lets jsontext parse buf in place instead of copying it.
func (s *scanner) d() *jsontext.Decoder {
	if s.dec == nil {
		s.dec = jsontext.NewDecoder(bytes.NewBuffer(s.buf), decoderOptions...)
	}
	return s.dec
}

// syntaxError says where and why the input is not JSON.
type syntaxError struct {
	offset int64
	msg    string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at byte %d", e.msg, e.offset) }

// jsonError is a syntax error found by jsontext, worded for a client: the
// package prefix is dropped, the offset and JSON pointer are kept.
type jsonError struct{ err error }

func (e *jsonError) Error() string { return strings.TrimPrefix(e.err.Error(), "jsontext: ") }
func (e *jsonError) Unwrap() error { return e.err }

// fail reports a syntax error at the end of the last value read.
func (s *scanner) fail(format string, args ...any) error {
	return &syntaxError{offset: s.d().InputOffset(), msg: fmt.Sprintf(format, args...)}
}

// wrap words a decoder error for a client; nil stays nil.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return &jsonError{err: err}
}

// unexpected reads the next token where want was expected and reports it,
// or why there is none.
func (s *scanner) unexpected(want string) error {
	tok, err := s.d().ReadToken()
	switch {
	case err == io.EOF:
		return s.fail("unexpected end of input, want %s", want)
	case err != nil:
		return wrap(err)
	}
	return s.fail("unexpected %s, want %s", tok.Kind(), want)
}

// peek returns the kind of the next token: '{', '[', '"', '0' for a number,
// 'n', 't', 'f', '}' or ']'; or 0 at the end of the input or before a
// syntax error, which the next read returns.
func (s *scanner) peek() byte { return byte(s.d().PeekKind()) }

// atEnd reports whether only whitespace is left.
func (s *scanner) atEnd() bool {
	if s.peek() != 0 {
		return false
	}
	_, err := s.d().ReadToken()
	return err == io.EOF
}

// read reads a token that must be of kind want.
func (s *scanner) read(want jsontext.Kind) (jsontext.Token, error) {
	if k := s.d().PeekKind(); k != want {
		return jsontext.Token{}, s.unexpected(want.String())
	}
	tok, err := s.d().ReadToken()
	return tok, wrap(err)
}

// object reads an object, calling member for each key with the scanner
// positioned at the value, which member must consume.
func (s *scanner) object(member func(key string) error) error {
	return s.members(func(key []byte) error { return member(string(key)) })
}

// members is object with the key as bytes, valid until the next read: most
// keys are compared and dropped, so they are not copied.
func (s *scanner) members(member func(key []byte) error) error {
	if _, err := s.read('{'); err != nil {
		return err
	}
	var unquoted []byte
	for {
		switch s.peek() {
		case '}':
			_, err := s.d().ReadToken()
			return wrap(err)
		case '"':
		default:
			return s.unexpected("an object key or '}'")
		}
		raw, err := s.d().ReadValue()
		if err != nil {
			return wrap(err)
		}
		key := raw[1 : len(raw)-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			// jsontext checked the escapes already.
			if unquoted, err = jsontext.AppendUnquote(unquoted[:0], raw); err != nil {
				return wrap(err)
			}
			key = unquoted
		}
		if err := member(key); err != nil {
			return err
		}
	}
}

// array reads an array, calling elem for each element (i counts from 0)
// with the scanner positioned at it; elem must consume it.
func (s *scanner) array(elem func(i int) error) error {
	if _, err := s.read('['); err != nil {
		return err
	}
	for i := 0; ; i++ {
		switch s.peek() {
		case ']':
			_, err := s.d().ReadToken()
			return wrap(err)
		case 0:
			return s.unexpected("a JSON value or ']'")
		}
		if err := elem(i); err != nil {
			return err
		}
	}
}

// skipValue reads and discards one value of any type, checking its syntax.
// Nesting is bounded by maxDepth counted from the top of the body, so depth
// is unused; it stays for the callers that pass it. (jsontext's own bound is
// 10,000 levels and not configurable in this version.)
func (s *scanner) skipValue(_ int) error {
	d := s.d()
	if k := d.PeekKind(); k != '{' && k != '[' {
		return wrap(d.SkipValue())
	}
	depth := d.StackDepth()
	for {
		if _, err := d.ReadToken(); err != nil {
			return wrap(err)
		}
		switch n := d.StackDepth(); {
		case n > maxDepth:
			return s.fail("nesting deeper than %d", maxDepth)
		case n <= depth:
			return nil
		}
	}
}

// number reads a number and returns its literal text (aliasing the input,
// valid until the next read) and whether it is an integer literal: no
// fraction and no exponent. jsontext has checked the grammar: no leading
// zeros, no plus sign, no NaN.
func (s *scanner) number() (lit []byte, integer bool, err error) {
	if k := s.d().PeekKind(); k != '0' {
		return nil, false, s.unexpected("a number")
	}
	v, err := s.d().ReadValue()
	if err != nil {
		return nil, false, wrap(err)
	}
	return v, !bytes.ContainsAny(v, ".eE"), nil
}

// str reads a string and returns it unescaped, as a fresh copy.
func (s *scanner) str() (string, error) {
	tok, err := s.read('"')
	if err != nil {
		return "", err
	}
	return tok.String(), nil
}
