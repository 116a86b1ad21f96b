package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender/sendertest"
)

// IRIs of the actors and objects in the bodies below.
const (
	mAlice   = "https://mastodon.social/users/alice"
	mNote    = "https://mastodon.social/users/alice/statuses/111"
	gBob     = "https://gts.example/users/bob"
	gNote    = "https://gts.example/users/bob/statuses/01HGTSNOTE"
	mCarol   = "https://mastodon.social/users/carol"
	lAlice   = "https://lemmy.ml/u/alice"
	lAdmin   = "https://lemmy.ml/u/admin"
	lRust    = "https://lemmy.ml/c/rust"
	lPost    = "https://lemmy.ml/post/42"
	beeBob   = "https://beehaw.org/u/bob"
	beeTech  = "https://beehaw.org/c/technology"
	akDee    = "https://akkoma.example/users/dee"
	public   = "https://www.w3.org/ns/activitystreams#Public"
	asCtx    = `"@context":["https://www.w3.org/ns/activitystreams","https://w3id.org/security/v1"]`
	lemmyCtx = `"@context":["https://join-lemmy.org/context.json","https://www.w3.org/ns/activitystreams"]`
)

// Embedded objects, shaped as each server serialises them.
var (
	mNoteObject = fmt.Sprintf(`{"id":%q,"type":"Note","summary":null,"inReplyTo":null,"published":"2026-11-30T10:00:00Z","url":"https://mastodon.social/@alice/111","attributedTo":%q,"to":[%q],"cc":["%s/followers"],"sensitive":false,"atomUri":%q,"inReplyToAtomUri":null,"conversation":"tag:mastodon.social,2026-11-30:objectId=1:objectType=Conversation","content":"<p>hello</p>","contentMap":{"en":"<p>hello</p>"},"attachment":[],"tag":[],"replies":{"id":"%s/replies","type":"Collection","first":{"type":"CollectionPage","next":"%s/replies?only_other_accounts=true&page=true","partOf":"%s/replies","items":[]}}}`,
		mNote, mAlice, public, mAlice, mNote, mNote, mNote, mNote)
	mPerson = fmt.Sprintf(`{"id":%q,"type":"Person","following":"%s/following","followers":"%s/followers","inbox":"%s/inbox","outbox":"%s/outbox","featured":"%s/collections/featured","preferredUsername":"alice","name":"Alice","summary":"<p>new bio</p>","url":"https://mastodon.social/@alice","manuallyApprovesFollowers":false,"publicKey":{"id":"%s#main-key","owner":%q,"publicKeyPem":"-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"},"endpoints":{"sharedInbox":"https://mastodon.social/inbox"}}`,
		mAlice, mAlice, mAlice, mAlice, mAlice, mAlice, mAlice, mAlice)
	gNoteObject = fmt.Sprintf(`{"attachment":[],"attributedTo":%q,"cc":"%s/followers","content":"<p>hi from gts</p>","id":%q,"published":"2026-11-30T10:05:00Z","replies":{"first":{"id":"%s/replies?page=true","next":"%s/replies?only_other_accounts=false&page=true","partOf":"%s/replies","type":"CollectionPage"},"id":"%s/replies","type":"Collection"},"sensitive":false,"summary":"","tag":[],"to":%q,"type":"Note","url":"https://gts.example/@bob/statuses/01HGTSNOTE"}`,
		gBob, gBob, gNote, gNote, gNote, gNote, gNote, public)
	lPage = fmt.Sprintf(`{"type":"Page","id":%q,"attributedTo":%q,"to":[%q,%q],"name":"Ordering keys","cc":[],"content":"<p>body</p>","mediaType":"text/html","source":{"content":"body","mediaType":"text/markdown"},"attachment":[],"sensitive":false,"published":"2026-11-30T10:10:00Z","language":{"identifier":"en","name":"English"},"audience":%q}`,
		lPost, lAlice, lRust, public, lRust)
)

// mastodonFollow, gtsFollow and lemmyFollow are Follows as each server
// sends them; Undo, Accept and Reject embed them whole.
func mastodonFollow(id, from, to string) string {
	return fmt.Sprintf(`{"id":%q,"type":"Follow","actor":%q,"object":%q}`, id, from, to)
}

func gtsFollow(id, from, to string) string {
	return fmt.Sprintf(`{"actor":%q,"id":%q,"object":%q,"to":%q,"type":"Follow"}`, from, id, to, to)
}

func lemmyFollow(id, from, to string) string {
	return fmt.Sprintf(`{"actor":%q,"object":%q,"type":"Follow","id":%q}`, from, to, id)
}

// withContext adds a JSON-LD context member to the object obj, as a
// top-level body has.
func withContext(context, obj string) string { return "{" + context + "," + obj[1:] }

// orderingKeyCases are outgoing bodies of Mastodon, Lemmy, GoToSocial and
// (for EmojiReact, which those three do not send) Akkoma. Bodies in one
// group must share a key and bodies of different groups must not.
var orderingKeyCases = []struct {
	server, name, group, body string
}{
	// Mastodon's own note, and what others do to it.
	{"mastodon", "Create{Note}", "note 111", fmt.Sprintf(`{%s,"id":"%s/activity","type":"Create","actor":%q,"published":"2026-11-30T10:00:00Z","to":[%q],"cc":["%s/followers"],"object":%s}`,
		asCtx, mNote, mAlice, public, mAlice, mNoteObject)},
	{"mastodon", "Update{Note}", "note 111", fmt.Sprintf(`{%s,"id":"%s#updates/1764496800","type":"Update","actor":%q,"published":"2026-11-30T10:20:00Z","to":[%q],"cc":["%s/followers"],"object":%s}`,
		asCtx, mNote, mAlice, public, mAlice, mNoteObject)},
	{"mastodon", "Delete{Tombstone}", "note 111", fmt.Sprintf(`{%s,"id":"%s#delete","type":"Delete","actor":%q,"to":[%q],"object":{"id":%q,"type":"Tombstone","atomUri":%q}}`,
		asCtx, mNote, mAlice, public, mNote, mNote)},
	{"gotosocial", "Like", "note 111", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/liked/01HFAVE","object":%q,"to":%q,"type":"Like"}`,
		asCtx, gBob, gBob, mNote, mAlice)},
	{"gotosocial", "Undo{Like}", "note 111", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/liked/01HFAVE#Undo","object":{"actor":%q,"id":"%s/liked/01HFAVE","object":%q,"to":%q,"type":"Like"},"to":%q,"type":"Undo"}`,
		asCtx, gBob, gBob, gBob, gBob, mNote, mAlice, mAlice)},
	{"gotosocial", "Announce", "note 111", fmt.Sprintf(`{%s,"actor":%q,"cc":[%q,"%s/followers"],"id":"%s/statuses/01HBOOST","object":%q,"published":"2026-11-30T10:30:00Z","to":%q,"type":"Announce"}`,
		asCtx, gBob, mAlice, gBob, gBob, mNote, public)},
	{"gotosocial", "Undo{Announce}", "note 111", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/statuses/01HBOOST#Undo","object":{"actor":%q,"cc":[%q,"%s/followers"],"id":"%s/statuses/01HBOOST","object":%q,"published":"2026-11-30T10:30:00Z","to":%q,"type":"Announce"},"to":%q,"type":"Undo"}`,
		asCtx, gBob, gBob, gBob, mAlice, gBob, gBob, mNote, public, public)},
	{"akkoma", "EmojiReact", "note 111", fmt.Sprintf(`{%s,"actor":%q,"content":"🐈","context":"https://akkoma.example/contexts/1","id":"https://akkoma.example/activities/6b1f","object":%q,"tag":[],"to":[%q],"type":"EmojiReact"}`,
		asCtx, akDee, mNote, mAlice)},
	{"akkoma", "Undo{EmojiReact}", "note 111", fmt.Sprintf(`{%s,"actor":%q,"id":"https://akkoma.example/activities/7c20","object":{"actor":%q,"content":"🐈","id":"https://akkoma.example/activities/6b1f","object":%q,"to":[%q],"type":"EmojiReact"},"to":[%q],"type":"Undo"}`,
		asCtx, akDee, akDee, mNote, mAlice, mAlice)},

	// GoToSocial's own note, and what Mastodon does to it.
	{"gotosocial", "Create{Note}", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"actor":%q,"cc":"%s/followers","id":"%s/activity","object":%s,"published":"2026-11-30T10:05:00Z","to":%q,"type":"Create"}`,
		asCtx, gBob, gBob, gNote, gNoteObject, public)},
	{"gotosocial", "Update{Note}", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"actor":%q,"cc":"%s/followers","id":"%s/updates/01HEDIT","object":%s,"published":"2026-11-30T10:06:00Z","to":%q,"type":"Update"}`,
		asCtx, gBob, gBob, gBob, gNoteObject, public)},
	{"gotosocial", "Delete", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"actor":%q,"cc":"%s/followers","id":"%s#Delete","object":%q,"to":%q,"type":"Delete"}`,
		asCtx, gBob, gBob, gNote, gNote, public)},
	{"mastodon", "Like", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"id":"%s#likes/42","type":"Like","actor":%q,"object":%q}`, asCtx, mAlice, mAlice, gNote)},
	{"mastodon", "Undo{Like}", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"id":"%s#likes/42/undo","type":"Undo","actor":%q,"object":{"id":"%s#likes/42","type":"Like","actor":%q,"object":%q}}`,
		asCtx, mAlice, mAlice, mAlice, mAlice, gNote)},
	{"mastodon", "Announce", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"id":"%s/statuses/222/activity","type":"Announce","actor":%q,"published":"2026-11-30T10:40:00Z","to":[%q],"cc":[%q,"%s/followers"],"object":%q}`,
		asCtx, mAlice, mAlice, public, gBob, mAlice, gNote)},
	{"mastodon", "Undo{Announce}", "note 01HGTSNOTE", fmt.Sprintf(`{%s,"id":"%s/statuses/222#announces/222/undo","type":"Undo","actor":%q,"to":[%q],"object":{"id":"%s/statuses/222/activity","type":"Announce","actor":%q,"published":"2026-11-30T10:40:00Z","to":[%q],"cc":[%q,"%s/followers"],"object":%q}}`,
		asCtx, mAlice, mAlice, public, mAlice, mAlice, public, gBob, mAlice, gNote)},

	// Everything between alice@mastodon.social and bob@gts.example, sent by
	// either: one relationship.
	{"mastodon", "Follow", "alice–bob", fmt.Sprintf(`{%s,"id":"https://mastodon.social/0b6a5f0e-1d2c","type":"Follow","actor":%q,"object":%q}`, asCtx, mAlice, gBob)},
	{"mastodon", "Undo{Follow}", "alice–bob", fmt.Sprintf(`{%s,"id":"%s#follows/7/undo","type":"Undo","actor":%q,"object":%s}`,
		asCtx, mAlice, mAlice, mastodonFollow("https://mastodon.social/0b6a5f0e-1d2c", mAlice, gBob))},
	{"mastodon", "Accept{Follow}", "alice–bob", fmt.Sprintf(`{%s,"id":"%s#accepts/follows/8","type":"Accept","actor":%q,"object":%s}`,
		asCtx, mAlice, mAlice, gtsFollow(gBob+"/follow/01HFOLLOW", gBob, mAlice))},
	{"mastodon", "Reject{Follow}", "alice–bob", fmt.Sprintf(`{%s,"id":"%s#rejects/follows/8","type":"Reject","actor":%q,"object":%s}`,
		asCtx, mAlice, mAlice, gtsFollow(gBob+"/follow/01HFOLLOW", gBob, mAlice))},
	{"mastodon", "Block", "alice–bob", fmt.Sprintf(`{%s,"id":"https://mastodon.social/4e1c9a3b-77d0","type":"Block","actor":%q,"object":%q}`, asCtx, mAlice, gBob)},
	{"mastodon", "Undo{Block}", "alice–bob", fmt.Sprintf(`{%s,"id":"%s#blocks/5/undo","type":"Undo","actor":%q,"object":{"id":"https://mastodon.social/4e1c9a3b-77d0","type":"Block","actor":%q,"object":%q}}`,
		asCtx, mAlice, mAlice, mAlice, gBob)},
	{"gotosocial", "Follow", "alice–bob", withContext(asCtx, gtsFollow(gBob+"/follow/01HFOLLOW", gBob, mAlice))},
	{"gotosocial", "Undo{Follow}", "alice–bob", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/follow/01HFOLLOW#Undo","object":%s,"to":%q,"type":"Undo"}`,
		asCtx, gBob, gBob, gtsFollow(gBob+"/follow/01HFOLLOW", gBob, mAlice), mAlice)},
	{"gotosocial", "Accept{Follow}", "alice–bob", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/accepts/01HACCEPT","object":%s,"to":%q,"type":"Accept"}`,
		asCtx, gBob, gBob, mastodonFollow("https://mastodon.social/0b6a5f0e-1d2c", mAlice, gBob), mAlice)},
	{"gotosocial", "Reject{Follow}", "alice–bob", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/reject/01HREJECT","object":%s,"to":%q,"type":"Reject"}`,
		asCtx, gBob, gBob, mastodonFollow("https://mastodon.social/0b6a5f0e-1d2c", mAlice, gBob), mAlice)},
	{"gotosocial", "Block", "alice–bob", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/blocks/01HBLOCK","object":%q,"to":%q,"type":"Block"}`, asCtx, gBob, gBob, mAlice, mAlice)},
	{"gotosocial", "Undo{Block}", "alice–bob", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/blocks/01HBLOCK#Undo","object":{"actor":%q,"id":"%s/blocks/01HBLOCK","object":%q,"to":%q,"type":"Block"},"to":%q,"type":"Undo"}`,
		asCtx, gBob, gBob, gBob, gBob, mAlice, mAlice, mAlice)},

	// Another relationship of alice's, and her own profile.
	{"mastodon", "Follow carol", "alice–carol", fmt.Sprintf(`{%s,"id":"https://mastodon.social/9d0e7f1a-aa01","type":"Follow","actor":%q,"object":%q}`, asCtx, mAlice, mCarol)},
	{"mastodon", "Update{Person}", "alice", fmt.Sprintf(`{%s,"id":"%s#updates/1764500000","type":"Update","actor":%q,"to":[%q],"object":%s}`, asCtx, mAlice, mAlice, public, mPerson)},
	{"mastodon", "Delete{Person}", "alice", fmt.Sprintf(`{%s,"id":"%s#delete","type":"Delete","actor":%q,"to":[%q],"object":%q}`, asCtx, mAlice, mAlice, public, mAlice)},
	{"mastodon", "Move", "alice", fmt.Sprintf(`{%s,"id":"%s#moves/3","type":"Move","actor":%q,"object":%q,"target":"https://new.example/users/alice"}`, asCtx, mAlice, mAlice, mAlice)},
	{"mastodon", "Add (pin)", "alice featured 111", fmt.Sprintf(`{%s,"type":"Add","actor":%q,"target":"%s/collections/featured","object":%q}`, asCtx, mAlice, mAlice, mNote)},
	{"mastodon", "Remove (unpin)", "alice featured 111", fmt.Sprintf(`{%s,"type":"Remove","actor":%q,"target":"%s/collections/featured","object":%q}`, asCtx, mAlice, mAlice, mNote)},
	{"gotosocial", "Move", "bob", fmt.Sprintf(`{%s,"actor":%q,"id":"%s/moves/01HMOVE","object":%q,"target":"https://new.example/users/bob","to":"%s/followers","type":"Move"}`, asCtx, gBob, gBob, gBob, gBob)},

	// Lemmy: a post in a community and its votes, announced by the
	// community.
	{"lemmy", "Create{Page}", "post 42", fmt.Sprintf(`{%s,"actor":%q,"to":[%q,%q],"object":%s,"cc":[],"type":"Create","id":"https://lemmy.ml/activities/create/5f1c","audience":%q}`,
		lemmyCtx, lAlice, lRust, public, lPage, lRust)},
	{"lemmy", "Update{Page}", "post 42", fmt.Sprintf(`{%s,"actor":%q,"to":[%q,%q],"object":%s,"cc":[],"type":"Update","id":"https://lemmy.ml/activities/update/8a2d","audience":%q}`,
		lemmyCtx, lAlice, lRust, public, lPage, lRust)},
	{"lemmy", "Delete", "post 42", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":%q,"cc":[%q],"type":"Delete","id":"https://lemmy.ml/activities/delete/91e0","audience":%q}`,
		lemmyCtx, lAlice, public, lPost, lRust, lRust)},
	{"lemmy", "Like", "post 42", fmt.Sprintf(`{%s,"actor":%q,"object":%q,"type":"Like","id":"https://lemmy.ml/activities/like/3c4b","audience":%q}`, lemmyCtx, lAlice, lPost, lRust)},
	{"lemmy", "Undo{Like}", "post 42", fmt.Sprintf(`{%s,"actor":%q,"object":{"actor":%q,"object":%q,"type":"Like","id":"https://lemmy.ml/activities/like/3c4b","audience":%q},"type":"Undo","id":"https://lemmy.ml/activities/undo/d7e1","audience":%q}`,
		lemmyCtx, lAlice, lAlice, lPost, lRust, lRust)},
	{"lemmy", "Announce{Create{Page}}", "post 42", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":{"actor":%q,"to":[%q,%q],"object":%s,"cc":[],"type":"Create","id":"https://lemmy.ml/activities/create/5f1c","audience":%q},"cc":["%s/followers"],"type":"Announce","id":"https://lemmy.ml/activities/announce/create/0aa7"}`,
		lemmyCtx, lRust, public, lAlice, lRust, public, lPage, lRust, lRust)},
	{"lemmy", "Announce{Undo{Like}}", "post 42", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":{"actor":%q,"object":{"actor":%q,"object":%q,"type":"Like","id":"https://lemmy.ml/activities/like/3c4b"},"type":"Undo","id":"https://lemmy.ml/activities/undo/d7e1"},"cc":["%s/followers"],"type":"Announce","id":"https://lemmy.ml/activities/announce/undo/5b2e"}`,
		lemmyCtx, lRust, public, lAlice, lAlice, lPost, lRust)},
	{"lemmy", "Follow community", "alice–technology", withContext(lemmyCtx, lemmyFollow("https://lemmy.ml/activities/follow/77c0", lAlice, beeTech))},
	{"lemmy", "Undo{Follow}", "alice–technology", fmt.Sprintf(`{%s,"actor":%q,"object":%s,"type":"Undo","id":"https://lemmy.ml/activities/undo/12f9"}`,
		lemmyCtx, lAlice, lemmyFollow("https://lemmy.ml/activities/follow/77c0", lAlice, beeTech))},
	{"lemmy", "Accept{Follow} by the community", "rust–bob", fmt.Sprintf(`{%s,"actor":%q,"object":%s,"type":"Accept","id":"https://lemmy.ml/activities/accept/c3d4"}`,
		lemmyCtx, lRust, lemmyFollow("https://beehaw.org/activities/follow/0e0e", beeBob, lRust))},
	{"lemmy", "Add moderator", "rust moderators carol", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":"https://lemmy.ml/u/carol","target":"%s/moderators","cc":[%q],"type":"Add","id":"https://lemmy.ml/activities/add/1a1a","audience":%q}`,
		lemmyCtx, lAdmin, public, lRust, lRust, lRust)},
	{"lemmy", "Remove moderator", "rust moderators carol", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":"https://lemmy.ml/u/carol","target":"%s/moderators","cc":[%q],"type":"Remove","id":"https://lemmy.ml/activities/remove/2b2b","audience":%q}`,
		lemmyCtx, lAdmin, public, lRust, lRust, lRust)},
	{"lemmy", "Add featured post", "rust featured 42", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":%q,"target":"%s/featured","cc":[%q],"type":"Add","id":"https://lemmy.ml/activities/add/3c3c","audience":%q}`,
		lemmyCtx, lAdmin, public, lPost, lRust, lRust, lRust)},
	{"lemmy", "Block (community ban)", "admin–bob", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":%q,"target":%q,"cc":[%q],"removeData":false,"summary":"spam","type":"Block","id":"https://lemmy.ml/activities/block/4d4d","audience":%q}`,
		lemmyCtx, lAdmin, public, beeBob, lRust, lRust, lRust)},
	{"lemmy", "Undo{Block}", "admin–bob", fmt.Sprintf(`{%s,"actor":%q,"to":[%q],"object":{"actor":%q,"to":[%q],"object":%q,"target":%q,"type":"Block","id":"https://lemmy.ml/activities/block/4d4d"},"cc":[%q],"type":"Undo","id":"https://lemmy.ml/activities/undo/5e5e","audience":%q}`,
		lemmyCtx, lAdmin, public, lAdmin, public, beeBob, lRust, lRust, lRust)},

	// An Undo that names what it undoes only by id: the queue cannot know
	// it was a Like of note 111, so it gets a key of its own (the caller
	// sets OrderingKey, see TestOrderingKeyExplicitWins).
	{"akkoma", "Undo by id", "undo by id", fmt.Sprintf(`{%s,"actor":%q,"id":"https://akkoma.example/activities/8d31","object":"https://akkoma.example/activities/like-9","to":[%q],"type":"Undo"}`,
		asCtx, akDee, mAlice)},
}

// orderingKeyOf enqueues body (prepared, not stored) with the given explicit
// key and returns the key the queue stores.
func orderingKeyOf(t *testing.T, q *Queue, body, explicit string) string {
	t.Helper()
	require.True(t, json.Valid([]byte(body)), "test body is JSON: %s", body)
	na, err := q.prepare(context.Background(), Activity{Body: []byte(body), OrderingKey: explicit, Inboxes: []string{"https://remote.example/inbox"}})
	require.NoError(t, err)
	require.NotEmpty(t, na.OrderingKey)
	return na.OrderingKey
}

// TestDefaultOrderingKeyGroupsWrappedActivities checks, on real-shaped
// bodies, that an activity and everything that wraps or answers it share a
// key, and that activities of different groups do not.
func TestDefaultOrderingKeyGroupsWrappedActivities(t *testing.T) {
	t.Parallel()
	q, err := New(newMemory(), &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	keys := make([]string, len(orderingKeyCases))
	for i, c := range orderingKeyCases {
		keys[i] = orderingKeyOf(t, q, c.body, "")
	}
	groupKey := map[string]string{}
	for i, c := range orderingKeyCases {
		name := c.server + " " + c.name
		if k, ok := groupKey[c.group]; ok {
			require.Equal(t, k, keys[i], "%s shares the key of group %q", name, c.group)
			continue
		}
		groupKey[c.group] = keys[i]
	}
	owner := map[string]string{}
	for g, k := range groupKey {
		require.NotContains(t, owner, k, "groups %q and %q must not share a key", g, owner[k])
		owner[k] = g
	}
	// The keys are the documented ones.
	require.Equal(t, mNote, groupKey["note 111"])
	require.Equal(t, lPost, groupKey["post 42"])
	require.Equal(t, mAlice, groupKey["alice"])
	require.Equal(t, relationshipKeyPrefix+gBob+" "+mAlice, groupKey["alice–bob"], "the pair, sorted")
	require.Equal(t, collectionKeyPrefix+mAlice+"/collections/featured "+mNote, groupKey["alice featured 111"])
	require.Equal(t, "https://akkoma.example/activities/like-9", groupKey["undo by id"])
}

// TestOrderingKeyExplicitWins checks that a caller's key is kept whatever
// the body, which is how an Undo naming its Like by id joins the note.
func TestOrderingKeyExplicitWins(t *testing.T) {
	t.Parallel()
	q, err := New(newMemory(), &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	for _, c := range orderingKeyCases {
		require.Equal(t, mNote, orderingKeyOf(t, q, c.body, mNote), "%s %s", c.server, c.name)
	}
}

// TestDefaultOrderingKeyFallbacks covers bodies that lack what a rule
// needs.
func TestDefaultOrderingKeyFallbacks(t *testing.T) {
	t.Parallel()
	q, err := New(newMemory(), &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	for _, tc := range []struct{ name, body, want string }{
		{"Follow without object: its id", `{"id":"https://l.example/f/1","type":"Follow","actor":"https://l.example/u/1"}`, "https://l.example/f/1"},
		{"Add without target: the object", `{"id":"https://l.example/a/1","type":"Add","actor":"https://l.example/u/1","object":"https://l.example/n/1"}`, "https://l.example/n/1"},
		{"type as an array", `{"id":"https://l.example/f/1","type":["Follow"],"actor":"https://l.example/u/1","object":"https://r.example/u/2"}`, relationshipKeyPrefix + "https://l.example/u/1 https://r.example/u/2"},
		{"embedded object without id: the activity's id", `{"id":"https://l.example/a/1","type":"Create","actor":"https://l.example/u/1","object":{"type":"Note","content":"x"}}`, "https://l.example/a/1"},
		{"object array: the activity's id", `{"id":"https://l.example/a/1","type":"Flag","actor":"https://l.example/u/1","object":["https://r.example/u/2","https://r.example/n/3"]}`, "https://l.example/a/1"},
	} {
		require.Equal(t, tc.want, orderingKeyOf(t, q, tc.body, ""), tc.name)
	}
	// Nesting beyond the bound stops at the IRI reached there.
	deep := `"https://l.example/n/innermost"`
	for i := range orderingKeyDepth + 3 {
		deep = fmt.Sprintf(`{"id":"https://l.example/a/%d","type":"Announce","object":%s}`, i, deep)
	}
	body := deep[:len(deep)-1] + `,"actor":"https://l.example/u/1"}`
	require.Equal(t, "https://l.example/a/1", orderingKeyOf(t, q, body, ""))
}

// FuzzDefaultOrderingKey checks that deriving the key never panics, is
// deterministic, and that wrapping an activity in an Undo that embeds it
// keeps its key.
func FuzzDefaultOrderingKey(f *testing.F) {
	for _, c := range orderingKeyCases {
		f.Add([]byte(c.body))
	}
	f.Add([]byte(`{"type":["Add","Follow"],"object":{"object":{"object":{}}},"target":{"id":7}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, err := parseBodyFields(body)
		if err != nil {
			return
		}
		k := defaultOrderingKey(fields)
		require.Equal(t, k, defaultOrderingKey(fields), "deterministic")
		if k == "" || !isJSONObject(body) || orderingKeyAt(fields, orderingKeyDepth-1) != k {
			return
		}
		undo := fmt.Appendf(nil, `{"id":"https://l.example/undo","type":"Undo","actor":"https://l.example/u/1","object":%s}`, body)
		wrapped, err := parseBodyFields(undo)
		require.NoError(t, err)
		require.Equal(t, k, defaultOrderingKey(wrapped), "an Undo embedding the activity shares its key")
	})
}
