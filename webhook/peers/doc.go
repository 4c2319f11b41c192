// Package peers is glaceon's peer lifecycle controller: it makes sure that no
// Fly WireGuard peer created at admission outlives the pod it was made for
// (docs/architecture.md, "Peer lifecycle").
//
// Two single-purpose parts run in the manager, both only on the leader:
//
//   - The peer Secret controller (ControllerName) reconciles peer Secrets.
//     A live Secret is bound to the pod that claims it (annotation
//     glaceon.fly/peer = the Secret's peer label, and a volume mounting the
//     Secret) by an ownerReference to the pod's UID, so the garbage collector
//     deletes the Secret when the pod goes. A deleting Secret carrying the
//     glaceon.fly/peer-cleanup finalizer gets its Fly peer removed, then the
//     finalizer. A Fly outage is retried with exponential backoff; after
//     Options.RemovalDeadline the controller records a PeerRemovalAbandoned
//     Event and lets the Secret go, so namespace deletion is never blocked
//     for ever; the sweeper removes the peer later.
//   - The sweeper (a periodic manager Runnable) deletes peer Secrets that no
//     pod claimed within Options.Grace (the pod was rejected after admission,
//     or the webhook timed out and the ReplicaSet retried), and removes Fly
//     peers named with Options.Prefix in Options.Orgs that have no peer
//     Secret, once it has seen them orphaned on sweeps at least Grace apart
//     (the Fly API gives no creation time, and an admission in flight
//     creates the peer before its Secret).
//
// Both read through a cache of their own holding only what they need: peer
// Secrets (metadata only: the private keys are never loaded) and injected
// pods. The manager's cache is not touched, so cmd/glaceon needs no cache
// configuration for this package; it calls SetupWithManager.
//
// Who owns what: the admission webhook creates the Fly peer and the peer
// Secret (labels LabelManagedBy=glaceon, LabelPeerName, LabelPeerOrg, the
// finalizer) before the pod exists; this package never creates peers.
package peers

// RBAC of the peer lifecycle controller, granted in deploy/rbac (the one
// truth of the manager's RBAC, with the leases and the webhook's needs).
//
// secrets: list/watch feed the cache (metadata only), get/list serve the
// sweeper's uncached double checks, patch adds the ownerReference and adds or
// removes the finalizer, delete removes unclaimed Secrets. update is not
// used: every write is a patch.
// pods: list/watch feed the cache, list serves the sweeper's double check.
// events: both APIs, since client-go's recorders write events.k8s.io/v1 and
// older tooling reads core events.
