package queue

import (
	"encoding/json"
	"slices"
)

// orderingKeyDepth bounds how many embedded objects defaultOrderingKey
// follows. Real bodies nest two or three deep (Announce{Undo{Like}}); the
// bound keeps a hostile body of thousands of nested objects from costing a
// parse of the body per level.
const orderingKeyDepth = 8

// Prefixes of the keys that are not an IRI. An IRI has no space, so these
// never equal the key of an activity keyed by an object.
const (
	relationshipKeyPrefix = "relationship "
	collectionKeyPrefix   = "collection "
)

// defaultOrderingKey derives the ordering key of an activity whose caller
// set none (the rules are documented on Activity.OrderingKey): an activity
// and every activity that wraps or answers it share the key of the
// innermost object, relationships (Follow, Block) are keyed by the pair of
// actors and collection changes (Add, Remove) by the collection and the
// object. It returns "" when the body names nothing to key by.
func defaultOrderingKey(f bodyFields) string {
	return orderingKeyAt(f, orderingKeyDepth)
}

// orderingKeyAt is defaultOrderingKey following at most depth embedded
// objects.
func orderingKeyAt(f bodyFields, depth int) string {
	types := typeNames(f.Type)
	switch {
	case hasType(types, "Follow", "Block"):
		// The wrapping Undo, Accept or Reject embeds the Follow or Block,
		// actor and object included, and so gets the same key.
		if a, o := iri(f.Actor), objectIRI(f); a != "" && o != "" {
			return relationshipKey(a, o)
		}
	case hasType(types, "Add", "Remove"):
		if t := iri(f.Target); t != "" {
			// The object's key once: at each level of a hostile body of
			// nested Adds, asking twice would double the work.
			if o := objectKey(f, depth); o != "" {
				return collectionKeyPrefix + t + " " + o
			}
			return iri(f.ID)
		}
	}
	// Create, Update, Delete, Like, Announce, EmojiReact, Move, ... and
	// the activities that wrap or answer another (Undo, Accept, Reject):
	// the key of the object, followed to the innermost one.
	if k := objectKey(f, depth); k != "" {
		return k
	}
	return iri(f.ID)
}

// objectKey is the key of an activity's "object": the key of an embedded
// object (its own object's key if it has one, else its id), or the IRI it
// references.
func objectKey(f bodyFields, depth int) string {
	inner := f.embedded
	if inner == nil && isJSONObject(f.Object) {
		// Deeper than parseBodyFields followed.
		parsed, err := parseBodyFields(f.Object)
		if err != nil {
			return ""
		}
		inner = &parsed
	}
	if inner == nil {
		return iri(f.Object)
	}
	if depth > 0 {
		if k := orderingKeyAt(*inner, depth-1); k != "" {
			return k
		}
	}
	id, _ := jsonString(inner.ID)
	return id
}

// objectIRI is iri(f.Object), without parsing an embedded object again.
func objectIRI(f bodyFields) string {
	if f.embedded != nil {
		id, _ := jsonString(f.embedded.ID)
		return id
	}
	return iri(f.Object)
}

// relationshipKey keys every Follow and Block between two actors, in either
// direction, by the pair: a Follow, its Accept or Reject, its Undo and a
// Block between the same two actors keep the order they were enqueued in.
func relationshipKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return relationshipKeyPrefix + a + " " + b
}

// typeNames returns an object's "type": one string, or an array of them as
// JSON-LD allows.
func typeNames(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	if one, ok := jsonString(raw); ok {
		return []string{one}
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many
	}
	return nil
}

// hasType reports whether any of types is one of names.
func hasType(types []string, names ...string) bool {
	for _, t := range types {
		if slices.Contains(names, t) {
			return true
		}
	}
	return false
}

// isJSONObject reports whether raw, a JSON value, is an object.
func isJSONObject(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}
