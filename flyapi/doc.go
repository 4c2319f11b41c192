// Package flyapi is glaceon's small client for the Fly.io GraphQL API (the
// WireGuard peer operations: organization lookup, nearest gateway region,
// add / list / remove / validate peers), and NewWireGuardConfig, which turns
// an addWireGuardPeer response into the wg-quick file `fly wireguard create`
// writes.
//
// The wire contract, with its sources (fly-go and flyctl), is docs/fly-api.md.
// The package depends on the standard library and logr only (no client-go).
//
// # The flyapi tree
//
// flyapi is the bottom of glaceon's import graph: everything glaceon knows
// about Fly. Its leaf packages import only the standard library (and
// wireguard-go for the bind), so the sidecar, the manager and the test
// double use them without importing each other or this client:
//
//   - flyapi/wgquick: the wg-quick file and WireGuard keys;
//   - flyapi/udpbind: the UDP transport to Fly's WireGuard gateways;
//   - flyapi/version: the release version glaceon announces in User-Agent;
//   - flyapi/flyapitest: the Fly API and gateway double for tests.
//
// # Errors
//
// Every Client method returns a *Error (possibly wrapped) with a Kind:
// Unauthorized (HTTP 401/403, code UNAUTHORIZED), NotFound (NOT_FOUND, "Could
// not find ...", a null object), Invalid (INVALID, UNPROCESSABLE,
// INVALID_ARGUMENTS, or an input the client refused to send), Conflict
// (duplicate peer name), RateLimited (HTTP 429, with RetryAfter) and
// Transient (5xx, network errors, MAINTENANCE, SERVICE_UNAVAILABLE). Use
// IsUnauthorized, IsNotFound, ... which work through wrapping. Messages are
// lower-case, name the operation and say what to do; they never contain the
// token or a private key (server messages are scrubbed of token segments).
//
// # Retries
//
// Queries, removeWireGuardPeer and validateWireGuardPeers are retried on
// rate limits and transient failures with exponential backoff and full jitter
// (Options.MaxRetries, RetryBaseDelay, RetryMaxDelay), honouring Retry-After
// (up to one minute) and never sleeping past the context deadline. When the
// context ends the error wraps both the context error and the last API error.
// addWireGuardPeer is retried directly only when the request certainly did
// not take effect (429, dial/DNS failure, MAINTENANCE); after an ambiguous
// failure AddPeer looks the peer up by name and reconciles by public key (see
// AddPeer).
//
// # Decisions where the contract leaves room
//
//   - Tokens: NormalizeToken follows fly-go (strip Bearer/FlyV1 repeatedly,
//     split on ',', drop empty parts, macaroons first under "FlyV1 "). It
//     also accepts a tab after a scheme and rejects control characters and
//     spaces inside a segment (fly-go would send them and fail later).
//   - AddPeer validates the response: peerip must be an IPv6 address (it is
//     not required to be in fdaa::/16, so test doubles may use other ULA
//     ranges), pubkey must decode to 32 non-zero bytes, endpointip must be a
//     host name or IP without a port. A created peer whose response fails
//     validation is removed again (best effort).
//   - After an ambiguous add where the peer turns out to exist with our
//     public key, AddPeer removes and recreates it once (the gateway key and
//     endpoint are only in the create response) and logs it.
//   - ListPeers requests first: 100 and also the peer "network" field.
//   - RemovePeer never lists: it sends the mutation and, when it knows the
//     slug, confirms with one organization.wireGuardPeer(name:) lookup (also
//     after running out of retries, which may hide an applied removal).
//     Only a missing peer is "already removed"; a missing organization is an
//     error (Error.Object, IsPeerNotFound, IsOrgNotFound).
//   - AddPeer sends the default network ("default") as "" like flyctl.
//
// # One client per org
//
// Options.Tokens (a TokenProvider such as *TokenHolder) is asked for the
// token on every request, so a rotated token is used at once; a change
// empties the org cache. CachedOrganization caches lookups (OrgCacheTTL).
// Every client reports glaceon_fly_api_* to its Metrics (DefaultMetrics
// unless set) under its Options.Org label; register them with
// RegisterMetrics.
//
// # Secrets
//
// Options and Client implement fmt.Formatter so that printing them with any
// verb never shows the token (wgquick does the same for keys).
package flyapi
