package flyapi

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/glaceon/glaceon/flyapi/target"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// GraphQL documents (docs/fly-api.md, "Operations"). Whitespace is irrelevant to the server.
const (
	queryOrganization  = `query($slug: String!) { organization(slug: $slug) { id slug rawSlug name type } }`
	queryNearestRegion = `query { nearestRegion(wireguardGateway: true) { code name gatewayAvailable deprecated } }`
	mutationAddPeer    = `mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip endpointip pubkey } }`
	queryListPeers     = `query($slug: String!, $first: Int, $after: String) { organization(slug: $slug) { wireGuardPeers(first: $first, after: $after) { nodes { id name pubkey region peerip network } pageInfo { hasNextPage endCursor } } } }`
	queryPeer          = `query($slug: String!, $name: String!) { organization(slug: $slug) { wireGuardPeer(name: $name) { id name pubkey region peerip network } } }`
	mutationRemovePeer = `mutation($input: RemoveWireGuardPeerInput!) { removeWireGuardPeer(input: $input) { organization { id } } }`
	mutationValidate   = `mutation($input: ValidateWireGuardPeersInput!) { validateWireGuardPeers(input: $input) { invalidPeerIps } }`
)

// Operation names used in errors and logs.
const (
	OpOrganization  = "look up organization"
	OpNearestRegion = "find nearest gateway region"
	OpAddPeer       = "add wireguard peer"
	OpListPeers     = "list wireguard peers"
	OpPeer          = "look up wireguard peer"
	OpRemovePeer    = "remove wireguard peer"
	OpValidatePeers = "validate wireguard peers"
)

// DefaultNetwork is the name of an org's default 6PN network; AddPeer sends
// it as "" like flyctl.
const DefaultNetwork = "default"

// ListPageSize is the page size ListPeers asks for; the server may use a
// smaller one.
const ListPageSize = 100

// maxListPages bounds ListPeers against a server that never ends.
const maxListPages = 1000

// MaxPeerNameLen keeps <name>._peer.internal a valid DNS label.
const MaxPeerNameLen = 63

// Organization is a Fly organization. ID is the node ID mutations take.
type Organization struct{ ID, Slug, RawSlug, Name, Type string }

// slugFor is the slug to query the organization by.
func (o Organization) slugFor() string {
	if o.Slug != "" {
		return o.Slug
	}
	return o.RawSlug
}

// AddPeerInput is the input of AddPeer. Org needs ID (or a Slug, which is
// then looked up); Region and Network are optional.
type AddPeerInput struct {
	Org       Organization
	Name      string
	PublicKey wgquick.Key
	Region    string
	Network   string
}

// CreatedPeer is what the API returns for a new peer, validated.
type CreatedPeer struct {
	Name             string
	PeerIP           netip.Addr
	EndpointHost     string // gateway host name (or IP) without port
	GatewayPublicKey wgquick.Key
	Network          string
}

// Peer is a WireGuard peer as listed by the API (raw strings).
type Peer struct{ ID, Name, PublicKey, Region, PeerIP, Network string }

// ValidatePeerName checks the rule glaceon uses for peer names: lower-case
// letters, digits and '-', 1..63 characters, not starting or ending with '-',
// and not starting with "interactive-" (reserved by flyctl for peers that
// may be deleted at will, and hidden from DNS).
func ValidatePeerName(name string) error {
	switch {
	case name == "":
		return errors.New("peer name is empty: use lower-case letters, digits and '-'")
	case len(name) > MaxPeerNameLen:
		return fmt.Errorf("peer name is %d characters, more than %d: shorten it so <name>._peer.internal stays a valid DNS name", len(name), MaxPeerNameLen)
	case strings.HasPrefix(name, "interactive-"):
		return errors.New("peer name must not start with \"interactive-\": flyctl reserves that prefix for throw-away peers hidden from DNS")
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("peer name %q must not start or end with '-'", name)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
			return fmt.Errorf("peer name %q has invalid character %q at %d: use lower-case letters, digits and '-'", target.Shorten(name), rune(ch), i)
		}
	}
	return nil
}

func validateSlug(slug string) error {
	if slug == "" {
		return errors.New("organization slug is empty: pass the slug shown by `fly orgs list`")
	}
	if len(slug) > 100 {
		return fmt.Errorf("organization slug is %d characters long: pass the slug shown by `fly orgs list`", len(slug))
	}
	for i := 0; i < len(slug); i++ {
		ch := slug[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return fmt.Errorf("organization slug %q has invalid character %q: pass the slug shown by `fly orgs list`", target.Shorten(slug), rune(ch))
		}
	}
	return nil
}

func validateRegion(r string) error {
	if len(r) > 10 {
		return fmt.Errorf("region %q is too long: use a region code like ord (see `fly platform regions`)", target.Shorten(r))
	}
	for i := 0; i < len(r); i++ {
		ch := r[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9') {
			return fmt.Errorf("region %q is not a region code: use lower-case codes like ord (see `fly platform regions`)", target.Shorten(r))
		}
	}
	return nil
}

func validateNetwork(n string) error {
	if len(n) > 63 {
		return fmt.Errorf("network name is %d characters, too long", len(n))
	}
	for i := 0; i < len(n); i++ {
		ch := n[i]
		letter := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
		if i == 0 && !letter {
			return fmt.Errorf("network name %q must start with a letter", target.Shorten(n))
		}
		if !(letter || ch >= '0' && ch <= '9' || ch == '-') {
			return fmt.Errorf("network name %q may only contain letters, digits and '-'", target.Shorten(n))
		}
	}
	return nil
}

func invalidInput(op string, err error) *Error {
	return &Error{Op: op, Kind: KindInvalid, summary: "invalid input", Message: err.Error()}
}

// Organization looks up an organization by slug. organization: null, a
// NOT_FOUND code or a "Could not find" message give a KindNotFound error
// naming the slug.
func (c *Client) Organization(ctx context.Context, slug string) (*Organization, error) {
	const op = OpOrganization
	if err := validateSlug(slug); err != nil {
		return nil, invalidInput(op, err)
	}
	data, err := c.run(ctx, op, queryOrganization, map[string]any{"slug": slug}, retryAll)
	if err != nil {
		return nil, orgNotFound(err, slug)
	}
	var resp struct {
		Organization *struct {
			ID      string `json:"id"`
			Slug    string `json:"slug"`
			RawSlug string `json:"rawSlug"`
			Name    string `json:"name"`
			Type    string `json:"type"`
		} `json:"organization"`
	}
	if err := decodeData(op, data, &resp); err != nil {
		return nil, err
	}
	if resp.Organization == nil {
		return nil, orgNotFound(&Error{Op: op, Kind: KindNotFound, HTTPStatus: 200}, slug)
	}
	o := resp.Organization
	if strings.TrimSpace(o.ID) == "" {
		return nil, invalidResponse(op, "organization.id", "empty")
	}
	org := Organization{ID: o.ID, Slug: o.Slug, RawSlug: o.RawSlug, Name: o.Name, Type: o.Type}
	c.orgs.put(slug, org)
	return &org, nil
}

// orgNotFound rewrites a not-found error of a query that only looks up the
// organization (so whatever is missing is the organization) so that it
// names the slug and says what to check.
func orgNotFound(err error, slug string) error {
	var e *Error
	if errors.As(err, &e) && e.Kind == KindNotFound && e.Object != ObjectWireGuardPeer {
		e.Object = ObjectOrganization
		e.summary = fmt.Sprintf("organization %q not found", slug)
		e.hint = "check the slug with `fly orgs list` (for a personal org use its real slug, not \"personal\") and that the token belongs to that organization"
	}
	return err
}

// NearestGatewayRegion returns the code of the WireGuard gateway region
// nearest to the caller (the cluster's egress).
func (c *Client) NearestGatewayRegion(ctx context.Context) (string, error) {
	const op = OpNearestRegion
	data, err := c.run(ctx, op, queryNearestRegion, nil, retryAll)
	if err != nil {
		return "", err
	}
	var resp struct {
		NearestRegion *struct {
			Code string `json:"code"`
		} `json:"nearestRegion"`
	}
	if err := decodeData(op, data, &resp); err != nil {
		return "", err
	}
	if resp.NearestRegion == nil {
		return "", &Error{Op: op, Kind: KindNotFound, HTTPStatus: 200, summary: "no gateway region returned",
			hint: "set the region explicitly (see `fly platform regions`, Gateway column)"}
	}
	code := strings.TrimSpace(resp.NearestRegion.Code)
	if code == "" {
		return "", invalidResponse(op, "nearestRegion.code", "empty")
	}
	if err := validateRegion(code); err != nil {
		return "", invalidResponse(op, "nearestRegion.code", "%v", err)
	}
	return code, nil
}

// AddPeer creates a WireGuard peer and validates the answer.
//
// The mutation is never blindly retried: rate limits and failures where the
// request certainly did not reach the server are retried directly; after an
// ambiguous failure (timeout, connection reset, 5xx) or a duplicate-name
// error, the peer is looked up by name (one request, whatever the size of
// the organization) and reconciled by public key:
//   - name absent: the create did not happen, try again (within MaxRetries);
//   - name present with our public key: the peer was created but the
//     response was lost, and the gateway key and endpoint are only returned
//     by the create. The peer is removed and created again (once), and this
//     is logged;
//   - name present with another public key: a KindConflict error.
//
// If the lookup fails too, the ambiguous error is returned: the peer may exist,
// and it carries our public key (so a sweeper can find it by name).
func (c *Client) AddPeer(ctx context.Context, in AddPeerInput) (*CreatedPeer, error) {
	const op = OpAddPeer
	if err := ValidatePeerName(in.Name); err != nil {
		return nil, invalidInput(op, err)
	}
	if in.PublicKey.IsZero() {
		return nil, invalidInput(op, errors.New("public key is empty: generate a key pair with GenerateKeyPair"))
	}
	if err := validateRegion(in.Region); err != nil {
		return nil, invalidInput(op, err)
	}
	// flyctl sends the org's default network as "" (the flaps name
	// "default" is web's ""), so do we.
	if in.Network == DefaultNetwork {
		in.Network = ""
	}
	if err := validateNetwork(in.Network); err != nil {
		return nil, invalidInput(op, err)
	}
	if in.Org.ID == "" {
		if in.Org.slugFor() == "" {
			return nil, invalidInput(op, errors.New("organization ID and slug are both empty: look the organization up with Organization first"))
		}
		org, err := c.CachedOrganization(ctx, in.Org.slugFor())
		if err != nil {
			return nil, err
		}
		in.Org = *org
	}

	recreated := false
	for attempt := 1; ; attempt++ {
		created, err := c.addPeerOnce(ctx, in)
		if err == nil {
			return created, nil
		}
		var apiErr *Error
		if !errors.As(err, &apiErr) || ctx.Err() != nil {
			return nil, err
		}
		if !(apiErr.Kind == KindConflict || (apiErr.ambiguous && IsRetryable(apiErr))) {
			return nil, err
		}
		slug := in.Org.slugFor()
		if slug == "" {
			apiErr.hint = joinHint(apiErr.hint, "the peer may have been created; cannot check without the organization slug")
			return nil, err
		}
		existing, lerr := c.findPeer(ctx, slug, in.Name)
		if lerr != nil {
			if apiErr.Kind == KindConflict {
				return nil, conflictError(in, err, fmt.Sprintf("(looking the peer up to compare public keys failed: %v)", lerr))
			}
			return nil, fmt.Errorf("%s: the create may have been applied and looking the peer up to check failed (%v): %w", op, lerr, err)
		}
		switch {
		case existing == nil && apiErr.Kind == KindConflict && mentionsPublicKey(apiErr.Message):
			// Not our name: our public key belongs to another peer.
			return nil, keyConflictError(in, err)
		case existing == nil && apiErr.Kind == KindConflict:
			// The server says the name is taken but cannot find it:
			// nothing to reconcile.
			return nil, conflictError(in, err, "(not found by name yet)")
		case existing == nil:
			if attempt > c.maxRetries {
				return nil, err
			}
			delay := c.backoff(attempt, apiErr.RetryAfter)
			c.log.Info("retrying Fly API request", "op", op, "attempt", attempt, "delay", delay,
				"status", apiErr.HTTPStatus, "kind", apiErr.Kind.String(), "reconciled", "absent")
			if err := c.sleep(ctx, delay); err != nil {
				return nil, ctxError(op, attempt, err, apiErr)
			}
		case samePublicKey(existing.PublicKey, in.PublicKey) && !recreated:
			c.log.Info("Fly API created the peer but the response was lost; removing and creating it again",
				"op", op, "attempt", attempt, "peer", in.Name)
			recreated = true
			if err := c.removePeerMutation(ctx, in.Org.ID, in.Name); err != nil && !IsNotFound(err) {
				return nil, fmt.Errorf("%s: peer %q was created but its response was lost, and removing it to create it again failed: %w", op, in.Name, err)
			}
		case samePublicKey(existing.PublicKey, in.PublicKey):
			return nil, fmt.Errorf("%s: peer %q was created twice but both responses were lost: %w", op, in.Name, err)
		default:
			return nil, conflictError(in, err, "with a different public key")
		}
	}
}

func joinHint(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func conflictError(in AddPeerInput, cause error, detail string) error {
	e := &Error{Op: OpAddPeer, Kind: KindConflict,
		summary: fmt.Sprintf("peer name %q already exists in organization %q %s", in.Name, in.Org.slugFor(), detail),
		hint:    "choose another name, or remove the old peer with `glaceon peer remove` / `fly wireguard remove`"}
	var apiErr *Error
	if errors.As(cause, &apiErr) {
		e.HTTPStatus, e.Code, e.Message, e.Path = apiErr.HTTPStatus, apiErr.Code, apiErr.Message, apiErr.Path
	}
	return e
}

// keyConflictError reports a public key already used by another peer.
func keyConflictError(in AddPeerInput, cause error) error {
	e := &Error{Op: OpAddPeer, Kind: KindConflict,
		summary: fmt.Sprintf("the public key of peer %q is already used by another peer in organization %q", in.Name, in.Org.slugFor()),
		hint:    "generate a new key pair for every peer (glaceon does); never reuse a key"}
	var apiErr *Error
	if errors.As(cause, &apiErr) {
		e.HTTPStatus, e.Code, e.Message, e.Path = apiErr.HTTPStatus, apiErr.Code, apiErr.Message, apiErr.Path
	}
	return e
}

func mentionsPublicKey(m string) bool {
	m = strings.ToLower(m)
	return strings.Contains(m, "pubkey") || strings.Contains(m, "public key")
}

func samePublicKey(listed string, ours wgquick.Key) bool {
	k, err := wgquick.ParseKey(listed)
	return err == nil && k == ours
}

// addPeerOnce sends the mutation (retrying only unambiguous failures) and
// validates the response.
func (c *Client) addPeerOnce(ctx context.Context, in AddPeerInput) (*CreatedPeer, error) {
	const op = OpAddPeer
	input := map[string]any{
		"organizationId": in.Org.ID,
		"name":           in.Name,
		"pubkey":         in.PublicKey.String(),
		"nats":           false,
	}
	if in.Region != "" {
		input["region"] = in.Region
	}
	if in.Network != "" {
		input["network"] = in.Network
	}
	data, err := c.run(ctx, op, mutationAddPeer, map[string]any{"input": input}, retrySafe)
	if err != nil {
		if IsOrgNotFound(err) {
			c.forgetOrganizationID(in.Org.ID)
		}
		return nil, err
	}
	created, verr := decodeAddPeer(data)
	if verr != nil {
		verr.Op = op
		// The server did create something we cannot use: try not to leak it.
		if rerr := c.removePeerMutation(ctx, in.Org.ID, in.Name); rerr != nil && !IsNotFound(rerr) {
			c.log.Info("could not remove a peer created with an invalid response", "op", op, "peer", in.Name, "error", rerr.Error())
			verr.hint = joinHint(verr.hint, fmt.Sprintf("peer %q may be left behind: remove it with `glaceon peer remove`", in.Name))
		}
		return nil, verr
	}
	created.Name = in.Name
	created.Network = in.Network
	return created, nil
}

// decodeAddPeer decodes and validates the addWireGuardPeer payload.
func decodeAddPeer(data []byte) (*CreatedPeer, *Error) {
	const op = OpAddPeer
	var resp struct {
		AddWireGuardPeer *struct {
			PeerIP     *string `json:"peerip"`
			EndpointIP *string `json:"endpointip"`
			PubKey     *string `json:"pubkey"`
		} `json:"addWireGuardPeer"`
	}
	if err := decodeDataE(op, data, &resp); err != nil {
		return nil, err
	}
	p := resp.AddWireGuardPeer
	if p == nil {
		return nil, invalidResponse(op, "addWireGuardPeer", "null without an error")
	}
	if p.PeerIP == nil || p.EndpointIP == nil || p.PubKey == nil {
		var missing []string
		for name, v := range map[string]*string{"peerip": p.PeerIP, "endpointip": p.EndpointIP, "pubkey": p.PubKey} {
			if v == nil {
				missing = append(missing, name)
			}
		}
		slices.Sort(missing)
		return nil, invalidResponse(op, "addWireGuardPeer", "missing %s", strings.Join(missing, ", "))
	}
	var cp CreatedPeer
	ip, err := netip.ParseAddr(strings.TrimSpace(*p.PeerIP))
	if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
		return nil, invalidResponse(op, "addWireGuardPeer.peerip", "%q is not an IPv6 address (Fly peer IPs are 6PN addresses in fdaa::/16)", target.Shorten(*p.PeerIP))
	}
	cp.PeerIP = ip
	host := strings.TrimSpace(*p.EndpointIP)
	if err := wgquick.ValidateEndpointHost(host); err != nil {
		return nil, invalidResponse(op, "addWireGuardPeer.endpointip", "%v", err)
	}
	cp.EndpointHost = strings.Trim(host, "[]")
	k, err := wgquick.ParseKey(*p.PubKey)
	if err != nil {
		return nil, invalidResponse(op, "addWireGuardPeer.pubkey", "%v", err)
	}
	if k.IsZero() {
		return nil, invalidResponse(op, "addWireGuardPeer.pubkey", "all-zero key")
	}
	cp.GatewayPublicKey = k
	return &cp, nil
}

// findPeer returns the peer named name, or nil if the organization has no
// such peer: one single-peer lookup, whatever the size of the organization.
func (c *Client) findPeer(ctx context.Context, slug, name string) (*Peer, error) {
	p, err := c.Peer(ctx, slug, name)
	if IsPeerNotFound(err) {
		return nil, nil
	}
	return p, err
}

// peerNode is a WireGuardPeer as the queries select it.
type peerNode struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	PubKey  string  `json:"pubkey"`
	Region  string  `json:"region"`
	PeerIP  string  `json:"peerip"`
	Network *string `json:"network"`
}

func (n *peerNode) peer() Peer {
	p := Peer{ID: n.ID, Name: n.Name, PublicKey: n.PubKey, Region: n.Region, PeerIP: n.PeerIP}
	if n.Network != nil {
		p.Network = *n.Network
	}
	return p
}

// validatePeerRef is the rule for a peer name we look up or remove: looser
// than ValidatePeerName, since peers made by others (flyctl) are named
// differently, but never empty, huge, or with spaces or control characters.
func validatePeerRef(op, name string) *Error {
	if name == "" || len(name) > 255 || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return invalidInput(op, fmt.Errorf("peer name %q is empty or has spaces or control characters", target.Shorten(name)))
	}
	return nil
}

// Peer looks up one WireGuard peer by name (fly-go GetWireGuardPeer:
// organization(slug:) { wireGuardPeer(name:) }): one request, whatever the
// size of the organization. A peer that does not exist gives a KindNotFound
// error with Object ObjectWireGuardPeer (IsPeerNotFound); an organization
// that does not exist, or that the token cannot see, gives Object
// ObjectOrganization (IsOrgNotFound). A not-found error that names neither
// is returned as it came (Object ""), so that it is never mistaken for a
// missing peer.
func (c *Client) Peer(ctx context.Context, orgSlug, name string) (*Peer, error) {
	const op = OpPeer
	if err := validateSlug(orgSlug); err != nil {
		return nil, invalidInput(op, err)
	}
	if err := validatePeerRef(op, name); err != nil {
		return nil, err
	}
	data, err := c.run(ctx, op, queryPeer, map[string]any{"slug": orgSlug, "name": name}, retryAll)
	if err != nil {
		return nil, notFoundDetail(err, orgSlug, name)
	}
	return decodePeer(data, orgSlug, name)
}

// decodePeer decodes and checks the data of a single-peer lookup.
func decodePeer(data []byte, orgSlug, name string) (*Peer, error) {
	const op = OpPeer
	var resp struct {
		Organization *struct {
			WireGuardPeer *peerNode `json:"wireGuardPeer"`
		} `json:"organization"`
	}
	if err := decodeData(op, data, &resp); err != nil {
		return nil, err
	}
	if resp.Organization == nil {
		return nil, orgNotFound(&Error{Op: op, Kind: KindNotFound, HTTPStatus: 200}, orgSlug)
	}
	n := resp.Organization.WireGuardPeer
	if n == nil {
		// The schema makes it non-null; a null is read as "no such peer".
		return nil, notFoundDetail(&Error{Op: op, Kind: KindNotFound, HTTPStatus: 200, Object: ObjectWireGuardPeer}, orgSlug, name)
	}
	if n.Name != name {
		return nil, invalidResponse(op, "organization.wireGuardPeer.name", "asked for %q, got %q", target.Shorten(name), target.Shorten(n.Name))
	}
	p := n.peer()
	return &p, nil
}

// notFoundDetail names the missing object of a single-peer lookup.
func notFoundDetail(err error, slug, name string) error {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindNotFound {
		return err
	}
	switch e.Object {
	case ObjectOrganization:
		return orgNotFound(err, slug)
	case ObjectWireGuardPeer:
		e.summary = fmt.Sprintf("peer %q not found in organization %q", name, slug)
	}
	return err
}

// peersPage is one page of wireGuardPeers.
type peersPage struct {
	Organization *struct {
		WireGuardPeers *struct {
			Nodes    []*peerNode `json:"nodes"`
			PageInfo *struct {
				HasNextPage bool    `json:"hasNextPage"`
				EndCursor   *string `json:"endCursor"`
			} `json:"pageInfo"`
		} `json:"wireGuardPeers"`
	} `json:"organization"`
}

// ListPeers returns every WireGuard peer of the organization, following
// pageInfo{hasNextPage endCursor} with first/after. Null nodes are skipped.
// A server that repeats a cursor, or claims a next page without a cursor, or
// exceeds 1000 pages, gives an error rather than a partial list.
func (c *Client) ListPeers(ctx context.Context, orgSlug string) ([]Peer, error) {
	const op = OpListPeers
	if err := validateSlug(orgSlug); err != nil {
		return nil, invalidInput(op, err)
	}
	var (
		out    []Peer
		after  any // nil → JSON null on the first page
		cursor = map[string]bool{}
	)
	for page := 1; ; page++ {
		if page > maxListPages {
			return nil, &Error{Op: op, Kind: KindUnknown, summary: "invalid response",
				Message: fmt.Sprintf("more than %d pages of peers; stopping", maxListPages)}
		}
		vars := map[string]any{"slug": orgSlug, "first": ListPageSize, "after": after}
		data, err := c.run(ctx, op, queryListPeers, vars, retryAll)
		if err != nil {
			return nil, orgNotFound(err, orgSlug)
		}
		var resp peersPage
		if err := decodeData(op, data, &resp); err != nil {
			return nil, err
		}
		if resp.Organization == nil {
			return nil, orgNotFound(&Error{Op: op, Kind: KindNotFound, HTTPStatus: 200}, orgSlug)
		}
		conn := resp.Organization.WireGuardPeers
		if conn == nil {
			return nil, invalidResponse(op, "organization.wireGuardPeers", "null")
		}
		for _, n := range conn.Nodes {
			if n == nil {
				continue
			}
			out = append(out, n.peer())
		}
		pi := conn.PageInfo
		if pi == nil || !pi.HasNextPage {
			return out, nil
		}
		if pi.EndCursor == nil || *pi.EndCursor == "" {
			return nil, invalidResponse(op, "wireGuardPeers.pageInfo.endCursor", "empty while hasNextPage is true (page %d)", page)
		}
		if cursor[*pi.EndCursor] {
			return nil, invalidResponse(op, "wireGuardPeers.pageInfo.endCursor", "cursor %q repeated on page %d; the server is looping", target.Shorten(*pi.EndCursor), page)
		}
		cursor[*pi.EndCursor] = true
		after = *pi.EndCursor
	}
}

// RemovePeer removes the peer named name from org, in O(1) Fly requests: the
// removeWireGuardPeer mutation, then (when org.Slug or RawSlug is set) one
// single-peer lookup to confirm (also made when the mutation ran out of
// retries, which may hide an applied removal). It is idempotent: "Could not
// find WireGuardPeer" (IsPeerNotFound), from the mutation or the confirming
// lookup, means already removed and is success. An organization that is not
// found (IsOrgNotFound) is an error, never "already removed". A peer still
// found after the mutation gives a KindTransient error. org.ID is looked up
// (CachedOrganization) from the slug when empty.
func (c *Client) RemovePeer(ctx context.Context, org Organization, name string) error {
	const op = OpRemovePeer
	if err := validatePeerRef(op, name); err != nil {
		return err
	}
	slug := org.slugFor()
	if slug != "" {
		if err := validateSlug(slug); err != nil {
			return invalidInput(op, err)
		}
	}
	if org.ID == "" {
		if slug == "" {
			return invalidInput(op, errors.New("organization ID and slug are both empty"))
		}
		o, err := c.CachedOrganization(ctx, slug)
		if err != nil {
			return err
		}
		org.ID = o.ID
	}
	merr := c.removePeerMutation(ctx, org.ID, name)
	switch {
	case merr == nil:
	case IsPeerNotFound(merr):
		c.log.V(1).Info("peer already gone", "op", op, "peer", name)
		return nil
	case IsOrgNotFound(merr):
		c.forgetOrganizationID(org.ID)
		var e *Error
		if errors.As(merr, &e) {
			e.summary = fmt.Sprintf("organization %q (ID %s) not found", slug, org.ID)
			e.hint = joinHint(e.hint, "check the organization and that the token belongs to it; the peer was not removed")
		}
		return merr
	case IsNotFound(merr) && slug != "":
		// Not found, but the API did not say what: the lookup tells.
	case IsRetryable(merr) && slug != "" && ctx.Err() == nil:
		// Out of retries, but an earlier attempt may have been applied
		// (a 502 after the removal): the lookup tells.
	default:
		if IsUnauthorized(merr) {
			var e *Error
			if errors.As(merr, &e) {
				e.hint = joinHint(e.hint, "removing peers needs an org or `fly tokens create wireguard` token; SSH tokens can add peers but not remove them")
			}
		}
		return merr
	}
	if slug == "" {
		return merr
	}
	_, lerr := c.Peer(ctx, slug, name)
	switch {
	case IsPeerNotFound(lerr):
		return nil
	case merr != nil:
		return merr
	case lerr == nil:
		return &Error{Op: op, Kind: KindTransient, summary: fmt.Sprintf("peer %q is still present after removal", name),
			hint: "retry later"}
	default:
		c.log.Info("could not confirm peer removal", "op", op, "peer", name, "error", lerr.Error())
		return nil
	}
}

// removePeerMutation sends removeWireGuardPeer; it is idempotent, so it is
// retried on rate limits and transient failures.
func (c *Client) removePeerMutation(ctx context.Context, orgID, name string) error {
	const op = OpRemovePeer
	vars := map[string]any{"input": map[string]any{"organizationId": orgID, "name": name}}
	data, err := c.run(ctx, op, mutationRemovePeer, vars, retryAll)
	if err != nil {
		return err
	}
	// Only errors matter; still reject a malformed body.
	var resp struct {
		RemoveWireGuardPeer *struct {
			Organization *struct {
				ID string `json:"id"`
			} `json:"organization"`
		} `json:"removeWireGuardPeer"`
	}
	return decodeData(op, data, &resp)
}

// ValidatePeers asks which of the peer IPs are no longer valid peers of the
// token's organizations. An empty list makes no call.
func (c *Client) ValidatePeers(ctx context.Context, peerIPs []string) (invalid []string, err error) {
	const op = OpValidatePeers
	if len(peerIPs) == 0 {
		return nil, nil
	}
	for _, ip := range peerIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return nil, invalidInput(op, fmt.Errorf("%q is not an IP address", target.Shorten(ip)))
		}
	}
	vars := map[string]any{"input": map[string]any{"peerIps": peerIPs}}
	data, err := c.run(ctx, op, mutationValidate, vars, retryAll)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Validate *struct {
			Invalid *[]string `json:"invalidPeerIps"`
		} `json:"validateWireGuardPeers"`
	}
	if err := decodeData(op, data, &resp); err != nil {
		return nil, err
	}
	if resp.Validate == nil || resp.Validate.Invalid == nil {
		return nil, invalidResponse(op, "validateWireGuardPeers.invalidPeerIps", "missing")
	}
	return *resp.Validate.Invalid, nil
}
