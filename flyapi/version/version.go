// Package version holds glaceon's release version, set at link time:
//
//	go build -ldflags "-X github.com/glaceon/glaceon/flyapi/version.Version=v1.2.3"
//
// Both binaries print it, and the Fly API client sends it in its
// User-Agent ("glaceon/<version>"), which is how Fly sees us. It is a leaf
// under flyapi because flyapi is the bottom of the import graph (its leaf
// packages import only the standard library), so the API client, the
// sidecar and the manager can all import it without importing each other.
package version

// Version is the release, e.g. "v1.2.3"; "dev" for a build without ldflags.
var Version = "dev"
