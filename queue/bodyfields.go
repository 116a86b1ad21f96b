package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// bodyFields are the parts of an activity body the queue reads: the raw
// JSON values of the object's members of these names (a member given twice
// counts by its last value, as encoding/json does).
type bodyFields struct {
	ID     json.RawMessage
	Type   json.RawMessage
	Actor  json.RawMessage
	Object json.RawMessage
	Target json.RawMessage
	// embedded is Object's own members when Object is an object, parsed
	// in the same pass (down to maxEmbeddedParsed objects; nil below, or
	// if Object is no object).
	embedded *bodyFields
}

// maxEmbeddedParsed is how many embedded objects parseBodyFields parses
// members of, one inside the other's "object": enough for
// defaultOrderingKey's depth, and a bound on what a hostile body of
// nested objects costs.
const maxEmbeddedParsed = orderingKeyDepth + 1

// parseBodyFields checks that data is one valid JSON object, with nothing
// but white space around it, and returns its members that the queue reads,
// in one pass over data: every enqueue parses its body, in the caller's
// request and, for EnqueueTx, inside the caller's transaction, so the pass
// counts (encoding/json reads a body twice to decode it, and again for each
// embedded object followed, about five times as long for a 1 KiB Create).
//
// It accepts what encoding/json accepts, nesting included (at most
// maxBodyDepth levels): strings may hold invalid UTF-8, but no control
// characters or unknown escapes. Member names match exactly, as JSON-LD
// terms are case-sensitive. The values returned share data's memory.
func parseBodyFields(data []byte) (bodyFields, error) {
	p := bodyParser{data: data}
	var f bodyFields
	p.space()
	if p.pos >= len(data) || data[p.pos] != '{' {
		return f, p.fail("a JSON object")
	}
	if err := p.object(&f, maxEmbeddedParsed); err != nil {
		return bodyFields{}, err
	}
	p.space()
	if p.pos != len(data) {
		return bodyFields{}, p.fail("the end of the body after the object")
	}
	return f, nil
}

// iri returns a JSON-LD reference as a string: the string itself, or the
// "id" of an object.
func iri(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return s
	}
	if !isJSONObject(raw) {
		return ""
	}
	obj, err := parseBodyFields(raw)
	if err != nil {
		return ""
	}
	s, _ := jsonString(obj.ID)
	return s
}

// jsonString decodes raw if it is a JSON string, as encoding/json does,
// without its cost in the common case of a string that needs no decoding.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if body := raw[1 : len(raw)-1]; raw[len(raw)-1] == '"' && bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// maxBodyDepth bounds the nesting of objects and arrays in a body, as
// encoding/json's own limit does.
const maxBodyDepth = 10000

// bodyParser reads one JSON value at a time from data, from pos on.
type bodyParser struct {
	data  []byte
	pos   int
	depth int
}

// bodySyntaxError says where a body stops being valid JSON.
type bodySyntaxError struct {
	offset int
	want   string
	found  string
}

func (e *bodySyntaxError) Error() string {
	return fmt.Sprintf("expected %s at byte %d, found %s", e.want, e.offset, e.found)
}

func (p *bodyParser) fail(want string) error {
	found := "the end of the body"
	if p.pos < len(p.data) {
		found = fmt.Sprintf("%q", p.data[p.pos])
	}
	return &bodySyntaxError{offset: p.pos, want: want, found: found}
}

func (p *bodyParser) space() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// peek returns the byte at pos, or 0 at the end.
func (p *bodyParser) peek() byte {
	if p.pos < len(p.data) {
		return p.data[p.pos]
	}
	return 0
}

// value reads one value starting at pos.
func (p *bodyParser) value() error {
	switch c := p.peek(); {
	case c == '{':
		return p.object(nil, 0)
	case c == '[':
		return p.array()
	case c == '"':
		_, err := p.str()
		return err
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return p.fail("a JSON value")
	}
}

// object reads an object starting at pos, recording the members f names
// if f is set, and those of up to follow embedded objects.
func (p *bodyParser) object(f *bodyFields, follow int) error {
	if p.depth++; p.depth > maxBodyDepth {
		return p.fail("at most 10000 nested objects and arrays")
	}
	p.pos++ // '{'
	p.space()
	if p.peek() == '}' {
		p.pos++
		p.depth--
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.fail("a member name")
		}
		start := p.pos
		escaped, err := p.str()
		if err != nil {
			return err
		}
		name := p.data[start:p.pos]
		p.space()
		if p.peek() != ':' {
			return p.fail("':' after a member name")
		}
		p.pos++
		p.space()
		at := p.pos
		if f == nil {
			if err := p.value(); err != nil {
				return err
			}
		} else if field := f.field(name, escaped); field == &f.Object && follow > 0 && p.peek() == '{' {
			inner := new(bodyFields)
			if err := p.object(inner, follow-1); err != nil {
				return err
			}
			f.Object, f.embedded = p.data[at:p.pos], inner
		} else {
			if err := p.value(); err != nil {
				return err
			}
			if field != nil {
				*field = p.data[at:p.pos]
				if field == &f.Object {
					f.embedded = nil // a member given twice counts by its last value
				}
			}
		}
		p.space()
		switch p.peek() {
		case ',':
			p.pos++
			p.space()
		case '}':
			p.pos++
			p.depth--
			return nil
		default:
			return p.fail("',' or '}' in an object")
		}
	}
}

// maxEscapedName is the longest a member name the queue reads can be when
// escaped: "object", every letter written \uXXXX.
const maxEscapedName = 6 * len(`\u0000`)

// field returns where the member whose name, quoted as in the body, is
// quoted goes, or nil if the queue does not read it.
func (f *bodyFields) field(quoted []byte, escaped bool) *json.RawMessage {
	bare := quoted[1 : len(quoted)-1]
	if escaped && len(bare) > maxEscapedName {
		return nil // none of the names read, however escaped
	}
	if escaped {
		var name string
		if json.Unmarshal(quoted, &name) != nil {
			return nil // not reached: str checked the escapes
		}
		bare = []byte(name)
	}
	switch string(bare) {
	case "id":
		return &f.ID
	case "type":
		return &f.Type
	case "actor":
		return &f.Actor
	case "object":
		return &f.Object
	case "target":
		return &f.Target
	}
	return nil
}

func (p *bodyParser) array() error {
	if p.depth++; p.depth > maxBodyDepth {
		return p.fail("at most 10000 nested objects and arrays")
	}
	p.pos++ // '['
	p.space()
	if p.peek() == ']' {
		p.pos++
		p.depth--
		return nil
	}
	for {
		if err := p.value(); err != nil {
			return err
		}
		p.space()
		switch p.peek() {
		case ',':
			p.pos++
			p.space()
		case ']':
			p.pos++
			p.depth--
			return nil
		default:
			return p.fail("',' or ']' in an array")
		}
	}
}

// str reads a string starting at pos (its opening quote) and reports
// whether it holds an escape.
func (p *bodyParser) str() (escaped bool, err error) {
	d := p.data
	i := p.pos + 1
	for {
		for i < len(d) && plainInString[d[i]] {
			i++
		}
		if i == len(d) {
			p.pos = i
			return false, p.fail("the end of a string")
		}
		switch c := d[i]; {
		case c == '"':
			p.pos = i + 1
			return escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				p.pos = len(d)
				return false, p.fail("an escape")
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for j := i + 2; j < i+6; j++ {
					if j >= len(d) || !isHex(d[j]) {
						p.pos = min(j, len(d))
						return false, p.fail("four hexadecimal digits after \\u")
					}
				}
				i += 6
			default:
				p.pos = i + 1
				return false, p.fail("an escape")
			}
		default: // a control character
			p.pos = i
			return false, p.fail("no control character in a string")
		}
	}
}

// plainInString says which bytes stand for themselves in a string: all but
// the quote, the backslash and control characters.
var plainInString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (p *bodyParser) literal(word string) error {
	for i := range len(word) {
		if p.peek() != word[i] {
			return p.fail(fmt.Sprintf("%q", word))
		}
		p.pos++
	}
	return nil
}

// number reads a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (p *bodyParser) number() error {
	if p.peek() == '-' {
		p.pos++
	}
	switch c := p.peek(); {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		p.digits()
	default:
		return p.fail("a digit")
	}
	if p.peek() == '.' {
		p.pos++
		if !p.digits() {
			return p.fail("a digit after '.'")
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.pos++
		if c := p.peek(); c == '+' || c == '-' {
			p.pos++
		}
		if !p.digits() {
			return p.fail("a digit in an exponent")
		}
	}
	return nil
}

// digits reads [0-9]* and reports whether it read one.
func (p *bodyParser) digits() bool {
	start := p.pos
	for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
		p.pos++
	}
	return p.pos > start
}
