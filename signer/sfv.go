package signer

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file holds the part of RFC 8941 (Structured Field Values) that
// Signature-Input and Accept-Signature need: a Dictionary whose members are
// Inner Lists of Strings, with Parameters on the items and on the lists.

// ParamKind is the type of a structured-field parameter value.
type ParamKind uint8

const (
	// ParamBoolean is ?1 or ?0; a parameter written without a value is true.
	ParamBoolean ParamKind = iota + 1
	// ParamInteger is a decimal integer of at most 15 digits.
	ParamInteger
	// ParamString is a quoted string of printable ASCII.
	ParamString
	// ParamToken is a bare token.
	ParamToken
	// ParamBytes is a base64 byte sequence between colons.
	ParamBytes
	// ParamDecimal is a decimal number, kept as written.
	ParamDecimal
)

// Param is one structured-field parameter, ";key=value".
type Param struct {
	Key  string
	Kind ParamKind
	// Str is the value of a String, Token or Decimal.
	Str string
	// Int is the value of an Integer.
	Int int64
	// Bool is the value of a Boolean.
	Bool bool
	// Bytes is the value of a Byte Sequence.
	Bytes []byte
}

// StringParam returns a String parameter.
func StringParam(key, v string) Param { return Param{Key: key, Kind: ParamString, Str: v} }

// IntParam returns an Integer parameter.
func IntParam(key string, v int64) Param { return Param{Key: key, Kind: ParamInteger, Int: v} }

// BoolParam returns a Boolean parameter.
func BoolParam(key string, v bool) Param { return Param{Key: key, Kind: ParamBoolean, Bool: v} }

// errSyntax is wrapped by every structured-field parse error.
var errSyntax = errors.New("invalid structured field")

// sfMember is a Dictionary member whose value is an Inner List.
type sfMember struct {
	key    string
	items  []sfItem
	params []Param
}

// sfItem is an item of an Inner List: a String with parameters.
type sfItem struct {
	value  string
	params []Param
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) fail(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", errSyntax, p.i, fmt.Sprintf(format, args...))
}

func (p *sfParser) eof() bool { return p.i >= len(p.s) }

func (p *sfParser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

func (p *sfParser) skipSP() {
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// parseDictionary parses a Dictionary of Inner Lists. A repeated key
// replaces the earlier value, as RFC 8941 says.
func parseDictionary(s string) ([]sfMember, error) {
	p := &sfParser{s: s}
	p.skipSP()
	var out []sfMember
	for !p.eof() {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		if p.peek() != '=' {
			return nil, p.fail("member %q is not an inner list", key)
		}
		p.i++
		m, err := p.innerList()
		if err != nil {
			return nil, err
		}
		m.key = key
		out = upsert(out, m, func(o sfMember) bool { return o.key == key })
		p.skipOWS()
		if p.eof() {
			break
		}
		if p.peek() != ',' {
			return nil, p.fail("expected ','")
		}
		p.i++
		p.skipOWS()
		if p.eof() {
			return nil, p.fail("trailing ','")
		}
	}
	return out, nil
}

// upsert replaces the element of list that same matches with v, keeping
// its position, or appends v: a repeated key's last value wins (RFC 8941).
func upsert[T any](list []T, v T, same func(T) bool) []T {
	for i := range list {
		if same(list[i]) {
			list[i] = v
			return list
		}
	}
	return append(list, v)
}

func (p *sfParser) key() (string, error) {
	start := p.i
	if c := p.peek(); !(c >= 'a' && c <= 'z') && c != '*' {
		return "", p.fail("key must start with a lower-case letter or '*'")
	}
	for !p.eof() {
		c := p.s[p.i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' || c == '*' {
			p.i++
			continue
		}
		break
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) innerList() (sfMember, error) {
	var m sfMember
	if p.peek() != '(' {
		return m, p.fail("expected '('")
	}
	p.i++
	for {
		p.skipSP()
		if p.eof() {
			return m, p.fail("unterminated inner list")
		}
		if p.peek() == ')' {
			p.i++
			params, err := p.params()
			m.params = params
			return m, err
		}
		if p.peek() != '"' {
			return m, p.fail("inner list items must be strings")
		}
		v, err := p.str()
		if err != nil {
			return m, err
		}
		params, err := p.params()
		if err != nil {
			return m, err
		}
		m.items = append(m.items, sfItem{value: v, params: params})
		if c := p.peek(); c != ' ' && c != ')' {
			return m, p.fail("expected ' ' or ')' after an item")
		}
	}
}

func (p *sfParser) params() ([]Param, error) {
	var out []Param
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		v := Param{Key: key, Kind: ParamBoolean, Bool: true}
		if p.peek() == '=' {
			p.i++
			if v, err = p.bareItem(key); err != nil {
				return nil, err
			}
		}
		out = upsert(out, v, func(o Param) bool { return o.Key == key })
	}
	return out, nil
}

func (p *sfParser) bareItem(key string) (Param, error) {
	v := Param{Key: key}
	switch c := p.peek(); {
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number(key)
	case c == '"':
		s, err := p.str()
		v.Kind, v.Str = ParamString, s
		return v, err
	case c == ':':
		end := strings.IndexByte(p.s[p.i+1:], ':')
		if end < 0 {
			return v, p.fail("unterminated byte sequence")
		}
		b, err := base64.StdEncoding.DecodeString(p.s[p.i+1 : p.i+1+end])
		if err != nil {
			return v, p.fail("byte sequence: %v", err)
		}
		p.i += end + 2
		v.Kind, v.Bytes = ParamBytes, b
		return v, nil
	case c == '?':
		if p.i+1 >= len(p.s) || (p.s[p.i+1] != '0' && p.s[p.i+1] != '1') {
			return v, p.fail("boolean must be ?0 or ?1")
		}
		v.Kind, v.Bool = ParamBoolean, p.s[p.i+1] == '1'
		p.i += 2
		return v, nil
	case (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*':
		start := p.i
		for !p.eof() && isTokenChar(p.s[p.i]) {
			p.i++
		}
		v.Kind, v.Str = ParamToken, p.s[start:p.i]
		return v, nil
	}
	return v, p.fail("unexpected %q", p.peek())
}

func isTokenChar(c byte) bool {
	if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0
}

func (p *sfParser) number(key string) (Param, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits, dot := 0, -1
	for !p.eof() {
		c := p.s[p.i]
		if c >= '0' && c <= '9' {
			digits++
		} else if c == '.' && dot < 0 {
			dot = digits
		} else {
			break
		}
		p.i++
	}
	text := p.s[start:p.i]
	switch {
	case digits == 0:
		return Param{}, p.fail("number without digits")
	case dot < 0 && digits > 15:
		return Param{}, p.fail("integer longer than 15 digits")
	case dot >= 0 && (dot > 12 || digits-dot < 1 || digits-dot > 3):
		return Param{}, p.fail("malformed decimal %q", text)
	case dot >= 0:
		return Param{Key: key, Kind: ParamDecimal, Str: text}, nil
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return Param{}, p.fail("integer %q: %v", text, err)
	}
	return Param{Key: key, Kind: ParamInteger, Int: n}, nil
}

func (p *sfParser) str() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.eof() || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return "", p.fail("bad escape in string")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c < 0x20 || c > 0x7e:
			return "", p.fail("non-printable byte in string")
		default:
			b.WriteByte(c)
		}
	}
	return "", p.fail("unterminated string")
}

// appendString appends s as a quoted String. s must be printable ASCII.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// appendParams appends ";key=value" for every parameter.
func appendParams(b []byte, params []Param) []byte {
	for _, p := range params {
		b = append(b, ';')
		b = append(b, p.Key...)
		switch p.Kind {
		case ParamBoolean:
			if !p.Bool {
				b = append(b, "=?0"...)
			}
		case ParamInteger:
			b = append(b, '=')
			b = strconv.AppendInt(b, p.Int, 10)
		case ParamString:
			b = append(b, '=')
			b = appendString(b, p.Str)
		case ParamToken, ParamDecimal:
			b = append(b, '=')
			b = append(b, p.Str...)
		case ParamBytes:
			b = append(b, "=:"...)
			b = base64.StdEncoding.AppendEncode(b, p.Bytes)
			b = append(b, ':')
		}
	}
	return b
}

// checkStrings reports an error when a String parameter or a component name
// cannot be written as a structured-field String (printable ASCII only).
func checkStrings(spec *SignatureSpec) error {
	check := func(s string) error {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				return fmt.Errorf("%w: %q is not printable ASCII", errSyntax, s)
			}
		}
		return nil
	}
	for _, c := range spec.Components {
		if err := check(c.Name); err != nil {
			return err
		}
	}
	for _, p := range spec.Params {
		if p.Kind == ParamString {
			if err := check(p.Str); err != nil {
				return fmt.Errorf("signer: parameter %s: %w", p.Key, err)
			}
		}
	}
	return nil
}
