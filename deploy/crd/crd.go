// Package crd embeds glaceon's generated CustomResourceDefinitions, so a
// binary knows the CRDs it was built with (`glaceon doctor` compares the
// cluster's against them).
package crd

import "embed"

// Files holds glaceon.fly_*.yaml, one CRD each.
//
//go:embed glaceon.fly_*.yaml
var Files embed.FS
