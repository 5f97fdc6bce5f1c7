package kubernetes

import (
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// A policy's status quotes the routes model's refusal of its fields, which
// may quote a value holding a credential (a plugin's redirect target with
// userinfo): masked there as in the edge's log. Before the fix keyPaths
// copied the message as it was.
func TestPolicyStatusMasksQuotedCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"one error", &routes.Error{Path: "config.rules[0].replace", Msg: `found "https://ops:hunter2@x.example/"`}},
		{"a list", routes.Errors{{Msg: `bad https://hunter2@x.example/`}, {Path: "p", Msg: `bad "/a?access_token=hunter2"`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keyPaths(tc.err); strings.Contains(got, "hunter2") || !strings.Contains(got, routes.Redacted) {
				t.Errorf("status message %q", got)
			}
		})
	}
}
