// Package webhook embeds the shipped MutatingWebhookConfiguration, so a
// binary knows what it should find in a cluster (`glaceon doctor`).
package webhook

import _ "embed"

// Configuration is mutatingwebhookconfiguration.yaml.
//
//go:embed mutatingwebhookconfiguration.yaml
var Configuration []byte
