package flyorg

import "time"

// Names of this package's controller, and the reasons of the FlyOrg Ready
// condition and of its Events. Reasons are API for people who alert on
// them: do not rename.
const (
	// ControllerName names the FlyOrg controller (logs, metrics, Events).
	ControllerName = "glaceon-flyorg"

	// ReasonReady: the token is accepted and the org was found.
	ReasonReady = "OrganizationFound"
	// ReasonTokenSecretMissing: the token Secret does not exist.
	ReasonTokenSecretMissing = "TokenSecretMissing"
	// ReasonTokenSecretInvalid: the Secret lacks the key, or holds
	// something that is not a Fly token.
	ReasonTokenSecretInvalid = "TokenSecretInvalid"
	// ReasonUnauthorized: the Fly API rejected the token.
	ReasonUnauthorized = "Unauthorized"
	// ReasonOrgNotFound: the token works but cannot see the org slug.
	ReasonOrgNotFound = "OrganizationNotFound"
	// ReasonFlyUnavailable: the Fly API did not answer the check (rate
	// limit, outage, timeout); checked again soon.
	ReasonFlyUnavailable = "FlyUnavailable"
	// ReasonInvalidSpec: a namespace pattern is not a valid path.Match
	// pattern.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonDeleting: the FlyOrg is deleted and waits for its FlyPeers
	// (their pods) to go, so their Fly peers can still be removed with its
	// token.
	ReasonDeleting = "WaitingForFlyPeers"

	// FinalizerFlyPeers keeps a deleted FlyOrg, and its token, until no
	// FlyPeer of it is left.
	FinalizerFlyPeers = "glaceon.fly/flypeers"
)

// Defaults for Options.
const (
	DefaultRecheckInterval = 5 * time.Minute
	DefaultRetryInterval   = 30 * time.Second
	DefaultFlyTimeout      = 30 * time.Second
	// deletionRecheck is how often a deleted FlyOrg counts its FlyPeers.
	deletionRecheck = 10 * time.Second
	// peerRecountDelay gathers the FlyPeer events of a burst into one
	// recount.
	peerRecountDelay = 2 * time.Second
)
