// Package inject turns a pod that asks for Fly.io targets into a pod that
// reaches them through glaceon's WireGuard sidecar.
//
// Everything here is a pure function of its inputs: no API calls, no clock, no
// randomness. The admission webhook, the offline `glaceon inject` command, the
// server-side dry run and the golden-file tests all share the same code path;
// only the Peer differs (a real one at admission, PlaceholderPeer otherwise).
//
// The flow an admission handler follows:
//
//	if inject.IsInjected(pod) { allow unchanged }
//	req, errs := inject.ParsePodAnnotations(pod)   // targets, org, region
//	errs = inject.Validate(pod, cfg)               // every reason to deny, at once
//	... provision the Fly peer and its Secret ...
//	out, err := inject.Inject(pod, cfg, peer)      // the mutated copy to patch with
//
// What the app sees (docs/architecture.md, "Contracts"): every target host gets its own loopback
// address (127.0.0.2, 127.0.0.3, …) and a hostAliases entry, and the sidecar
// listens there on the target's own port, so `http://twi-ollama.flycast` or
// `postgres://db.internal:5432` work unchanged inside the pod.
package inject
