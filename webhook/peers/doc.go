// Package peers is glaceon's peer lifecycle: no Fly WireGuard peer this
// cluster made outlives its pod, and nothing at Fly that this cluster did
// not make is ever touched.
//
// The truth is the FlyPeer, a cluster-scoped resource only the manager
// writes. Admission writes it before calling Fly (phase Provisioning),
// then the Fly peer, then the pod's Secret (the wg-quick file only), then
// phase Ready. A pooled FlyPeer (webhook/pool, label glaceon.fly/pool) has
// no namespace until admission claims it; this package leaves it alone
// until then, except that the sweeper deletes one left Provisioning past
// the grace. Once claimed it is a pod's peer like any other, and its pooled
// key Secret in glaceon's namespace goes when it binds or is released.
// Two single-purpose parts run on the leader:
//
//   - The FlyPeer controller (ControllerName) binds a FlyPeer to the pod
//     that names it in glaceon.fly/peer in the FlyPeer's namespace (phase
//     Bound, spec.pod.name/uid), deletes the FlyPeer when that pod is gone
//     (confirmed uncached), and through the FinalizerFlyPeer finalizer
//     removes the Fly peer (one call, by org ID and name), then the pod's
//     Secret. A failing Fly API is retried with backoff up to
//     Options.RemovalDeadline, then the FlyPeer is let go with a
//     PeerRemovalAbandoned Event and the sweeper takes over.
//   - The sweeper deletes FlyPeers no pod claimed within Options.Grace
//     (measured on the API server's clock), and, listing each FlyOrg's org
//     once per sweep, removes Fly peers whose names match this cluster's
//     exact pattern (Namer.Ours: prefix, cluster identity, random suffix)
//     and that no FlyPeer names.
//
// Tenant objects never drive anything: deleting, relabelling or forging a
// Secret in a tenant namespace changes nothing at Fly. Pods are cached as
// metadata only and only when labelled glaceon.fly/injected=true; Secrets
// are never read at all.
package peers

// RBAC of the peer lifecycle (granted in deploy/rbac). Secrets: delete only (the pod's Secret after
// its Fly peer is removed; admission creates it). Pods: metadata watch of
// injected pods, uncached get/list to confirm a pod is gone or unclaimed.
