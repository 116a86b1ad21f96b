package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMergeRegistrations(t *testing.T) {
	t.Parallel()
	got := MergeRegistrations([]DomainRegistration{
		{Domain: "b.example", SharedInbox: "https://b.example/inbox"},
		{Domain: "a.example"},
		{Domain: "b.example"}, // no inbox: the one given before stays
		{Domain: "a.example", SharedInbox: "https://a.example/1"},
		{Domain: "a.example", SharedInbox: "https://a.example/2"},
	})
	require.Equal(t, []DomainRegistration{
		{Domain: "a.example", SharedInbox: "https://a.example/2"},
		{Domain: "b.example", SharedInbox: "https://b.example/inbox"},
	}, got)
	require.Empty(t, MergeRegistrations(nil))
}

func TestLatestStates(t *testing.T) {
	t.Parallel()
	got := LatestStates([]DomainState{
		{Domain: "a.example", Cursor: 1},
		{Domain: "b.example", Cursor: 5},
		{Domain: "a.example", Cursor: 2},
	})
	require.Equal(t, []DomainState{{Domain: "b.example", Cursor: 5}, {Domain: "a.example", Cursor: 2}}, got)
}
