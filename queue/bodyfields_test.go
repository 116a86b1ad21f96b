package queue

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseBodyFieldsReadsTheMembersTheQueueUses(t *testing.T) {
	t.Parallel()
	f, err := parseBodyFields([]byte(` {"@context":["https://www.w3.org/ns/activitystreams",{"x":null}],"id":"https://l.example/a/1",
		"type":["Create",7],"actor":{"id":"https://l.example/u/1","n":-1.5e+3},"object":{"id":"https://l.example/n/1","object":"o"},
		"target":"https://l.example/c","other":[true,false,{}],"\u0069d":"https://l.example/a/2"}` + "\n"))
	require.NoError(t, err)
	require.Equal(t, `"https://l.example/a/2"`, string(f.ID), "a member given twice counts by its last value, escapes decoded")
	require.Equal(t, `["Create",7]`, string(f.Type))
	require.Equal(t, `{"id":"https://l.example/u/1","n":-1.5e+3}`, string(f.Actor))
	require.Equal(t, `{"id":"https://l.example/n/1","object":"o"}`, string(f.Object))
	require.Equal(t, `"https://l.example/c"`, string(f.Target))
	require.NotNil(t, f.embedded, "the embedded object's members are read in the same pass")
	require.Equal(t, `"https://l.example/n/1"`, string(f.embedded.ID))
	require.Equal(t, `"o"`, string(f.embedded.Object))
	require.Nil(t, f.embedded.embedded)

	f, err = parseBodyFields([]byte(`{"object":{"id":"x"},"object":"y"}`))
	require.NoError(t, err)
	require.Equal(t, `"y"`, string(f.Object))
	require.Nil(t, f.embedded, "the last object counts")

	f, err = parseBodyFields([]byte(`{"ID":"x","Actor":"y","object":{}}`))
	require.NoError(t, err)
	require.Nil(t, f.ID, "member names match exactly")
	require.Nil(t, f.Actor)
	require.Equal(t, `{}`, string(f.Object))
}

func TestParseBodyFieldsRejectsWhatIsNotOneJSONObject(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		``, ` `, `[]`, `"x"`, `1`, `null`,
		`{`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,}`, `{,}`, `{"a" 1}`, `{a:1}`, `{"a":1}}`, `{"a":1} x`, `{} {}`,
		`{"a":[1,]}`, `{"a":[1 2]}`, `{"a":tru}`, `{"a":nul}`, `{"a":True}`,
		`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":1e+}`, `{"a":+1}`, `{"a":0x1}`,
		`{"a":"x` + "\n" + `"}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`, `{"a":"x\`, `{"a":"x`,
		`{"a":` + strings.Repeat("[", maxBodyDepth) + strings.Repeat("]", maxBodyDepth) + `}`,
	} {
		_, err := parseBodyFields([]byte(body))
		require.Error(t, err, "%q", body)
		require.Equal(t, json.Valid([]byte(body)) && isJSONObject([]byte(body)), err == nil, "%q: as encoding/json", body)
	}
	deep := `{"a":` + strings.Repeat("[", maxBodyDepth-1) + strings.Repeat("]", maxBodyDepth-1) + `}`
	_, err := parseBodyFields([]byte(deep))
	require.NoError(t, err, "nesting up to encoding/json's limit")

	_, err = parseBodyFields([]byte(`{"actor":"x",}`))
	require.EqualError(t, err, `expected a member name at byte 13, found '}'`)
}

// FuzzParseBodyFields checks the parser against encoding/json: the same
// bodies are valid, and it finds the same members.
func FuzzParseBodyFields(f *testing.F) {
	for _, c := range orderingKeyCases {
		f.Add([]byte(c.body))
	}
	for _, s := range []string{`{"id":null,"type":1e5,"actor":"\ud800","object":[{}],"target":"\u0074"}`, `{"\u0061ctor":"x","actor":{}}`, "{\"id\":\"\xff\"}", ` {} `, `{"a":"\/\b\f\n\r\t\"\\"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseBodyFields(body)
		valid := json.Valid(body) && isJSONObject(body)
		require.Equal(t, valid, err == nil, "valid as encoding/json says (%v)", err)
		if !valid {
			return
		}
		var members map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(body, &members))
		for name, raw := range map[string]json.RawMessage{"id": got.ID, "type": got.Type, "actor": got.Actor, "object": got.Object, "target": got.Target} {
			require.Equal(t, string(members[name]), string(raw), name)
		}
		for f := &got; f.embedded != nil; f = f.embedded {
			inner, err := parseBodyFields(f.Object)
			require.NoError(t, err)
			inner.embedded = nil
			e := *f.embedded
			e.embedded = nil
			require.Equal(t, inner, e, "the embedded object's members, as parsed on their own")
		}
	})
}

func TestParseBodyFieldsReadsEscapedNames(t *testing.T) {
	t.Parallel()
	f, err := parseBodyFields([]byte(`{"\u006f\u0062\u006a\u0065\u0063\u0074":"o","\u0074ype":"T","\u0069\u0064\u0069\u0064\u0069\u0064\u0069":"x"}`))
	require.NoError(t, err)
	require.Equal(t, `"o"`, string(f.Object), "every letter escaped")
	require.Equal(t, `"T"`, string(f.Type))
	require.Nil(t, f.ID, "a longer name is none of them")
}
