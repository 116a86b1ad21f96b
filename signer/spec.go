package signer

import (
	"fmt"
	"strings"
)

// Component is a covered component of an RFC 9421 signature: a derived
// component such as "@method", or a lower-case header field name, with its
// parameters (such as ;req or ;sf), which this package parses but does not
// sign with.
type Component struct {
	Name   string
	Params []Param
}

// SignatureSpec is one member of a Signature-Input or Accept-Signature
// field (RFC 9421 §4.1 and §5.1): its label, the covered components in
// order, and the signature parameters (created, keyid, alg, ...) in order.
type SignatureSpec struct {
	Label      string
	Components []Component
	Params     []Param
}

// Param returns the parameter named key.
func (s *SignatureSpec) Param(key string) (Param, bool) {
	for _, p := range s.Params {
		if p.Key == key {
			return p, true
		}
	}
	return Param{}, false
}

// Covers reports whether the signature covers the component name (with any
// parameters).
func (s *SignatureSpec) Covers(name string) bool {
	for _, c := range s.Components {
		if c.Name == name {
			return true
		}
	}
	return false
}

// AppendValue appends the serialised inner list with its parameters, the
// value of "@signature-params" and of the Signature-Input member.
func (s *SignatureSpec) AppendValue(b []byte) []byte {
	b = append(b, '(')
	for i, c := range s.Components {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendString(b, c.Name)
		b = appendParams(b, c.Params)
	}
	b = append(b, ')')
	return appendParams(b, s.Params)
}

// String returns the Signature-Input member, label=(...);params.
func (s *SignatureSpec) String() string {
	b := append([]byte(s.Label), '=')
	return string(s.AppendValue(b))
}

// ParseSignatureInput parses a Signature-Input field value (RFC 9421 §4.1):
// a Dictionary of Inner Lists of component names with signature
// parameters. created and expires must be Integers; keyid, alg, nonce and
// tag Strings.
func ParseSignatureInput(v string) ([]SignatureSpec, error) {
	return parseChecked(v, "Signature-Input", false)
}

// ParseAcceptSignature parses an Accept-Signature field value (RFC 9421
// §5.1): the signatures a receiver asks for, each with the components it
// wants covered and the parameters it wants. There created and expires may
// be Booleans (include one) as well as Integers.
func ParseAcceptSignature(v string) ([]SignatureSpec, error) {
	return parseChecked(v, "Accept-Signature", true)
}

// parseChecked parses field and checks the types of the parameters RFC
// 9421 defines; request allows created and expires without a value.
func parseChecked(v, field string, request bool) ([]SignatureSpec, error) {
	specs, err := parseSpecs(v)
	if err != nil {
		return nil, fmt.Errorf("signer: parsing %s: %w", field, err)
	}
	for _, s := range specs {
		for _, p := range s.Params {
			if err := checkParamKind(p, request); err != nil {
				return nil, fmt.Errorf("signer: parsing %s: label %s: %w", field, s.Label, err)
			}
		}
	}
	return specs, nil
}

func parseSpecs(v string) ([]SignatureSpec, error) {
	members, err := parseDictionary(v)
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, fmt.Errorf("%w: empty", errSyntax)
	}
	out := make([]SignatureSpec, 0, len(members))
	for _, m := range members {
		s := SignatureSpec{Label: m.key, Params: m.params, Components: make([]Component, 0, len(m.items))}
		for _, it := range m.items {
			if it.value == "" || it.value != strings.ToLower(it.value) {
				return nil, fmt.Errorf("%w: label %s: component %q is not a lower-case name", errSyntax, m.key, it.value)
			}
			s.Components = append(s.Components, Component{Name: it.value, Params: it.params})
		}
		out = append(out, s)
	}
	return out, nil
}

func checkParamKind(p Param, request bool) error {
	var ok bool
	switch p.Key {
	case "created", "expires":
		ok = p.Kind == ParamInteger || (request && p.Kind == ParamBoolean)
	case "keyid", "alg", "nonce", "tag":
		ok = p.Kind == ParamString
	default:
		return nil
	}
	if !ok {
		return fmt.Errorf("%w: parameter %s has the wrong type", errSyntax, p.Key)
	}
	return nil
}
