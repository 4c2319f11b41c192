// Package flyorg serves the FlyOrg resource: one Fly organization the
// cluster may use, its API token (a Secret in glaceon's own namespace) and
// the namespaces allowed to use it.
//
// Three parts:
//
//   - Registry holds one Fly API client per FlyOrg, built from the token in
//     the FlyOrg's Secret. It follows the Secret: each use compares the
//     Secret's resourceVersion (from a metadata-only cache of glaceon's
//     namespace) with the one the client was built from, and reads the
//     Secret again, uncached, when it changed. A rotated token is used from
//     the next call on, on every replica, with no restart.
//   - Resolve picks the FlyOrg of a pod (its glaceon.fly/org annotation or
//     the default FlyOrg) and checks that the pod's namespace may use it.
//   - The controller (leader only) checks each FlyOrg at start, when it or
//     its Secret changes, and every Options.RecheckInterval: is the token
//     accepted and the org found? It writes the Ready condition with the
//     Fly error as the message, and the org's node ID, which admission and
//     peer removal use.
package flyorg

// RBAC of this package (granted in deploy/rbac): FlyOrgs are read and their status written; token
// Secrets are read in glaceon's namespace only (a Role, see deploy/rbac).
