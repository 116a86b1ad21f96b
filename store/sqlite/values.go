package sqlite

import (
	"encoding/json"
	"strings"
)

// maxVariables is the number of parameters one statement may bind: SQLite's
// SQLITE_MAX_VARIABLE_NUMBER default since 3.32 (the store needs 3.35).
const maxVariables = 32766

// values returns the VALUES rows of a multi-row statement: rows groups of
// cols placeholders, "(?, ?), (?, ?)".
func values(rows, cols int) string {
	row := "(" + strings.Repeat("?, ", cols-1) + "?)"
	var b strings.Builder
	b.Grow(rows * (len(row) + 2))
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

// statementParams is the room chunks leaves in each statement for
// parameters of its own besides the rows' (an owner, a time).
const statementParams = 8

// chunks calls fn with consecutive ranges [from, to) of n rows of cols
// parameters each, as many rows at a time as one statement may bind with
// up to statementParams more, and stops at the first error.
func chunks(n, cols int, fn func(from, to int) error) error {
	per := (maxVariables - statementParams) / cols
	for from := 0; from < n; from += per {
		if err := fn(from, min(from+per, n)); err != nil {
			return err
		}
	}
	return nil
}

// jsonList encodes a list of strings as a JSON array; nil becomes [].
func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	out, _ := json.Marshal(l) // cannot fail for []string
	return string(out)
}

// jsonInts encodes a list of integers as a JSON array; nil becomes [].
func jsonInts(l []int64) string {
	if len(l) == 0 {
		return "[]"
	}
	out, _ := json.Marshal(l) // cannot fail for []int64
	return string(out)
}

// parseList decodes a JSON array of strings written by jsonList; [] becomes
// an empty, non-nil list, as the other stores return.
func parseList(s string) ([]string, error) {
	out := []string{}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, err
	}
	return out, nil
}
