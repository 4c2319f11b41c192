package version

// Commit is the git commit the binary was built from, set at link time
// like Version (-X github.com/glaceon/glaceon/flyapi/version.Commit=…);
// "unknown" for a build without ldflags.
var Commit = "unknown"

// String is what `glaceon version` and `glaceon-sidecar --version` print
// after the program's name: "v1.2.3 (commit 0123abc…)".
func String() string { return Version + " (commit " + Commit + ")" }
