package main

import (
	"strings"
	"testing"
)

// TestManagerRefusesBadFlagsAtStart: a peer prefix too long for a peer
// name (issue 15 item 7: it used to panic every admission), a sweep grace
// under the floor (item 11), a Fly timeout that leaves no room for the
// clean-up inside the webhook's timeout (item 8): each is a usage error
// naming the flag, before anything connects anywhere.
func TestManagerRefusesBadFlagsAtStart(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peer-prefix=" + strings.Repeat("k", 60) + "-"}, "shorten --peer-prefix"},
		{[]string{"--cluster-name=Prod-EU"}, "cluster name"},
		{[]string{"--sweep-grace=5s"}, "--sweep-grace=1m0s or more"},
		{[]string{"--fly-timeout=14s"}, "fly timeout 14s must be positive and at most 12s"},
	} {
		code, _, stderr := runCLI(t, append([]string{"manager"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("glaceon manager %v: exit %d, stderr %q; want usage error with %q", tc.args, code, stderr, tc.want)
		}
	}
}
