package main

import (
	"bytes"
	"testing"

	"github.com/glaceon/glaceon/flyapi/version"
)

func TestVersionCommand(t *testing.T) {
	var stdout bytes.Buffer
	if code := run([]string{"version"}, nil, &stdout, &bytes.Buffer{}); code != exitOK {
		t.Fatalf("glaceon version: exit %d", code)
	}
	// Unstamped test binary: the link-time defaults. The stamped release
	// binaries are run by hack/release's test.
	if want := "glaceon " + version.Version + " (commit " + version.Commit + ")\n"; stdout.String() != want {
		t.Errorf("glaceon version printed %q, want %q", stdout.String(), want)
	}
}
