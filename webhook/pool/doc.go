// Package pool is glaceon's warm peer pool: per FlyOrg with spec.pool, the
// leader keeps spec.pool.size ready Fly peers per region (FlyPeers in
// phase Available, label glaceon.fly/pool, each with its wg-quick file in
// a Secret in glaceon's own namespace), and admission claims one instead
// of calling Fly.
//
// Refill (leader only) is write-ahead like admission: the FlyPeer first
// (Provisioning), then addWireGuardPeer, then the key Secret, then phase
// Available. A refill that dies between two steps leaves a Provisioning
// FlyPeer, which the peer sweeper deletes after its grace period (its
// finalizer removes the Fly peer): nothing leaks at Fly. Creations are
// rate-limited per FlyOrg, a 429's Retry-After is waited for, and while
// Fly fails the refill backs off. Pooled peers older than Options.MaxAge
// are replaced, the old ones removed only once the pool is full again.
//
// A claim (every replica) is a compare-and-swap: the FlyPeer's
// spec.pod.namespace is set with a patch carrying the resourceVersion the
// claimer saw, so of two replicas racing for one peer exactly one wins and
// the other tries another. Only then is the key read and the pod's Secret
// written. A claimed peer is a pod's peer like any other (the FlyPeer
// controller binds it; the sweeper deletes it if its pod never appears)
// and the CRD forbids clearing the namespace again: it never returns to
// the pool.
//
// RBAC: Secrets in glaceon's namespace (create, get; delete is granted
// cluster-wide already), FlyPeers (create, patch, delete), FlyOrg status
// (patch). No Secret outside glaceon's namespace is read.
package pool
