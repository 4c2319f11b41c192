package flyapi_test

// Integration tests: the real flyapi.Client against the real Fly double
// (flyapitest) over loopback HTTP, including every scripted fault of the
// double for every operation it can hit.
//
// Every test starts its own double (API only, no WireGuard gateway), bounds
// every call with a context deadline, and counts the GraphQL requests the
// double received so that both missing retries and retry storms fail.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

const (
	// integTimeout bounds every sequence of client calls in one (sub)test.
	integTimeout = 15 * time.Second
	integOrg     = "acme"
	// The double's default personal org: canonical slug and real slug.
	integPersonal    = "personal"
	integPersonalRaw = "glaceon-test-123"
	integTokenSource = "FLY_API_TOKEN"
	// integUnknownIP is a 6PN-looking address no peer of the double has.
	integUnknownIP = "fdaa:0:18:a7b:d6b:0:ff:ff02"
)

func integServer(t *testing.T, o flyapitest.Options) *flyapitest.Server {
	t.Helper()
	o.NoGateway = true
	return flyapitest.Start(t, o)
}

// integClient returns a client of srv with fast retries (1ms..10ms).
func integClient(t *testing.T, srv *flyapitest.Server, mod ...func(*flyapi.Options)) *flyapi.Client {
	t.Helper()
	o := flyapi.Options{
		BaseURL:        srv.URL(),
		Token:          srv.Token(),
		TokenSource:    integTokenSource,
		RetryBaseDelay: time.Millisecond,
		RetryMaxDelay:  10 * time.Millisecond,
	}
	for _, m := range mod {
		m(&o)
	}
	c, err := flyapi.New(o)
	if err != nil {
		t.Fatalf("flyapi.New: %v", err)
	}
	return c
}

func integCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func integKey(t *testing.T) wgquick.KeyPair {
	t.Helper()
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// integOrgOf builds the Organization for slug from the double's own state,
// without any request.
func integOrgOf(t *testing.T, srv *flyapitest.Server, slug string) flyapi.Organization {
	t.Helper()
	id := srv.OrgID(slug)
	if id == "" {
		t.Fatalf("double has no org %q", slug)
	}
	return flyapi.Organization{ID: id, Slug: slug}
}

// integDelta runs fn and returns how many GraphQL requests the double got.
func integDelta(srv *flyapitest.Server, fn func()) int {
	before := srv.Requests()
	fn()
	return srv.Requests() - before
}

func integNamed(srv *flyapitest.Server, org, name string) []flyapitest.PeerState {
	var out []flyapitest.PeerState
	for _, p := range srv.Peers(org) {
		if p.Name == name {
			out = append(out, p)
		}
	}
	return out
}

// integOnePeer asserts that the double has exactly one peer called name in
// org, with public key pub, and returns it.
func integOnePeer(t *testing.T, srv *flyapitest.Server, org, name string, pub wgquick.Key) flyapitest.PeerState {
	t.Helper()
	got := integNamed(srv, org, name)
	if len(got) != 1 {
		t.Fatalf("double has %d peers named %q in %s, want exactly 1: %+v", len(got), name, org, got)
	}
	if got[0].PublicKey != pub.String() {
		t.Fatalf("peer %q has public key %s, want %s", name, got[0].PublicKey, pub)
	}
	return got[0]
}

func integNoPeer(t *testing.T, srv *flyapitest.Server, org, name string) {
	t.Helper()
	if got := integNamed(srv, org, name); len(got) != 0 {
		t.Fatalf("double still has peer %q in %s: %+v", name, org, got)
	}
}

// integCheckCreated asserts that a CreatedPeer describes the peer the double
// holds now: same address, the double's gateway key and endpoint, and that
// it makes a valid wg-quick file.
func integCheckCreated(t *testing.T, srv *flyapitest.Server, c *flyapi.Client, cp *flyapi.CreatedPeer, kp wgquick.KeyPair, org, name string) {
	t.Helper()
	if cp == nil {
		t.Fatal("AddPeer returned a nil CreatedPeer without an error")
	}
	p := integOnePeer(t, srv, org, name, kp.Public)
	if cp.Name != name {
		t.Errorf("CreatedPeer.Name = %q, want %q", cp.Name, name)
	}
	if cp.PeerIP != p.PeerIP {
		t.Errorf("CreatedPeer.PeerIP = %s, but the double's peer %q has %s (stale response?)", cp.PeerIP, name, p.PeerIP)
	}
	if !srv.OrgPrefix(org).Contains(cp.PeerIP) {
		t.Errorf("CreatedPeer.PeerIP %s is outside the org's /48 %s", cp.PeerIP, srv.OrgPrefix(org))
	}
	if got, want := cp.GatewayPublicKey.String(), srv.GatewayPublicKey(); got != want {
		t.Errorf("CreatedPeer.GatewayPublicKey = %s, want the double's gateway key %s", got, want)
	}
	if cp.EndpointHost != srv.GatewayHost() {
		t.Errorf("CreatedPeer.EndpointHost = %q, want %q", cp.EndpointHost, srv.GatewayHost())
	}
	cfg, err := flyapi.NewWireGuardConfig(kp.Private, *cp, c.GatewayPort())
	if err != nil {
		t.Fatalf("NewWireGuardConfig: %v", err)
	}
	back, err := wgquick.Parse(cfg.Render())
	if err != nil {
		t.Fatalf("ParseWireGuardConfig(Render()): %v", err)
	}
	if back.Address != p.PeerIP || back.PeerPublicKey.String() != srv.GatewayPublicKey() || back.PrivateKey != kp.Private {
		t.Errorf("wg-quick round trip: Address %s PeerPublicKey %s (want %s, %s)", back.Address, back.PeerPublicKey, p.PeerIP, srv.GatewayPublicKey())
	}
}

// integSecrets are the token segments the double accepts; none may appear in
// an error.
func integSecrets(srv *flyapitest.Server, extra ...string) []string {
	var out []string
	for _, tok := range append([]string{srv.Token(), srv.UserToken()}, extra...) {
		for _, f := range strings.Fields(tok) {
			if strings.EqualFold(f, "FlyV1") || strings.EqualFold(f, "Bearer") {
				continue
			}
			for _, seg := range strings.Split(f, ",") {
				if len(seg) >= 8 {
					out = append(out, seg)
				}
			}
		}
	}
	return out
}

func integNoSecret(t *testing.T, srv *flyapitest.Server, err error, extra ...string) {
	t.Helper()
	if err == nil {
		return
	}
	var e *flyapi.Error
	texts := []string{err.Error(), fmt.Sprintf("%v|%+v|%#v|%q", err, err, err, err)}
	if errors.As(err, &e) {
		texts = append(texts, e.Message, fmt.Sprintf("%#v", e))
	}
	for _, s := range integSecrets(srv, extra...) {
		for _, txt := range texts {
			if strings.Contains(txt, s) {
				t.Fatalf("error text contains a token segment: %q", err.Error())
			}
		}
	}
}

// integKinds names the kinds err matches, for failure messages.
func integKinds(err error) string {
	if err == nil {
		return "<nil>"
	}
	var ks []string
	for name, is := range map[string]func(error) bool{
		"unauthorized": flyapi.IsUnauthorized, "notfound": flyapi.IsNotFound,
		"invalid": flyapi.IsInvalid, "conflict": flyapi.IsConflict,
		"ratelimited": flyapi.IsRateLimited, "transient": flyapi.IsTransient,
	} {
		if is(err) {
			ks = append(ks, name)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		ks = append(ks, "deadline")
	}
	slices.Sort(ks)
	return fmt.Sprintf("[%s] %v", strings.Join(ks, ","), err)
}

// ---------------------------------------------------------------------------

func TestIntegrationOrganization(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	c := integClient(t, srv)
	// A peer in the personal org, to show both slug forms reach the same org.
	seed := integKey(t)
	if _, err := srv.AddPeer(integPersonal, "integ-personal", seed.Public.String()); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		slug       string
		wantSlug   string
		wantRaw    string
		wantType   string
		wantIDOf   string // the double's org whose node ID must come back
		wantErr    func(error) bool
		wantErrSub string
		wantReqs   int
	}{
		{name: "shared org by slug", slug: integOrg, wantSlug: integOrg, wantRaw: integOrg, wantType: "SHARED", wantIDOf: integOrg, wantReqs: 1},
		{name: "personal org by canonical slug", slug: integPersonal, wantSlug: integPersonal, wantRaw: integPersonalRaw, wantType: "PERSONAL", wantIDOf: integPersonal, wantReqs: 1},
		{name: "personal org by raw slug", slug: integPersonalRaw, wantSlug: integPersonal, wantRaw: integPersonalRaw, wantType: "PERSONAL", wantIDOf: integPersonalRaw, wantReqs: 1},
		{name: "unknown slug is not found and names the slug", slug: "nope-org", wantErr: flyapi.IsNotFound, wantErrSub: `"nope-org"`, wantReqs: 1},
		{name: "slug differing only in case is not found", slug: "ACME", wantErr: flyapi.IsNotFound, wantErrSub: `"ACME"`, wantReqs: 1},
		{name: "invalid slug is refused without a request", slug: "acme corp", wantErr: flyapi.IsInvalid, wantReqs: 0},
		{name: "empty slug is refused without a request", slug: "", wantErr: flyapi.IsInvalid, wantReqs: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := integCtx(t, integTimeout)
			var org *flyapi.Organization
			var err error
			n := integDelta(srv, func() { org, err = c.Organization(ctx, tc.slug) })
			if n != tc.wantReqs {
				t.Errorf("requests = %d, want %d", n, tc.wantReqs)
			}
			integNoSecret(t, srv, err)
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("Organization(%q) = %+v, %s; want a typed error", tc.slug, org, integKinds(err))
				}
				if org != nil {
					t.Errorf("Organization returned %+v with an error", org)
				}
				if !strings.Contains(err.Error(), tc.wantErrSub) {
					t.Errorf("error %q does not contain %s", err, tc.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatalf("Organization(%q): %v", tc.slug, err)
			}
			wantID := srv.OrgID(tc.wantIDOf)
			if org.ID != wantID || org.ID == "" {
				t.Errorf("ID = %q, want %q", org.ID, wantID)
			}
			if org.ID == org.Slug || org.ID == org.RawSlug || org.ID == tc.slug {
				t.Errorf("ID %q is a slug, want the opaque node ID", org.ID)
			}
			if org.Slug != tc.wantSlug || org.RawSlug != tc.wantRaw || org.Type != tc.wantType || org.Name == "" {
				t.Errorf("org = %+v, want slug %q rawSlug %q type %q and a name", org, tc.wantSlug, tc.wantRaw, tc.wantType)
			}
			// The org as returned can be used to list its peers.
			peers, err := c.ListPeers(ctx, tc.slug)
			if err != nil {
				t.Fatalf("ListPeers(%q): %v", tc.slug, err)
			}
			wantPeers := 0
			if tc.wantType == "PERSONAL" {
				wantPeers = 1
			}
			if len(peers) != wantPeers {
				t.Errorf("ListPeers(%q) = %+v, want %d peers", tc.slug, peers, wantPeers)
			}
		})
	}

	t.Run("listing an unknown org is not found and names the slug", func(t *testing.T) {
		ctx := integCtx(t, integTimeout)
		var err error
		n := integDelta(srv, func() { _, err = c.ListPeers(ctx, "nope-org") })
		if !flyapi.IsNotFound(err) || !strings.Contains(err.Error(), `"nope-org"`) {
			t.Fatalf("ListPeers(nope-org) = %s", integKinds(err))
		}
		if n != 1 {
			t.Errorf("requests = %d, want 1 (not found is not retried)", n)
		}
	})
}

func TestIntegrationNearestRegion(t *testing.T) {
	tests := []struct {
		name   string
		region string
		want   string
	}{
		{"default region", "", "yyz"},
		{"configured known region", "ord", "ord"},
		{"configured region outside the table", "zzz", "zzz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := integServer(t, flyapitest.Options{Region: tc.region})
			c := integClient(t, srv)
			ctx := integCtx(t, integTimeout)
			var got string
			var err error
			n := integDelta(srv, func() { got, err = c.NearestGatewayRegion(ctx) })
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || got != srv.Region() {
				t.Errorf("NearestGatewayRegion = %q, want %q (double: %q)", got, tc.want, srv.Region())
			}
			if n != 1 {
				t.Errorf("requests = %d, want 1", n)
			}
			// A peer added in that region is listed with it.
			kp := integKey(t)
			if _, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: integOrgOf(t, srv, integOrg), Name: "integ-region", PublicKey: kp.Public, Region: got}); err != nil {
				t.Fatalf("AddPeer in %s: %v", got, err)
			}
			if p := integOnePeer(t, srv, integOrg, "integ-region", kp.Public); p.Region != got {
				t.Errorf("peer region = %q, want %q", p.Region, got)
			}
		})
	}
}

// TestIntegrationPeerLifecycle: add → list (paginated) → validate → remove →
// list empty, under several page sizes.
func TestIntegrationPeerLifecycle(t *testing.T) {
	const nPeers = 7
	tests := []struct {
		name string
		opts flyapitest.Options
		org  string // slug given to Organization
		// pageCap is the most peers the double returns per page to this
		// client, which always asks for first: flyapi.ListPageSize.
		pageCap int
	}{
		// The default page size (2) and PageSize only apply when the
		// client sends no `first`; MaxPageSize caps what it asks for.
		{name: "default page size", org: integOrg, pageCap: flyapi.ListPageSize},
		{name: "PageSize 1", opts: flyapitest.Options{PageSize: 1}, org: integOrg, pageCap: flyapi.ListPageSize},
		{name: "MaxPageSize 1", opts: flyapitest.Options{MaxPageSize: 1}, org: integOrg, pageCap: 1},
		{name: "PageSize 1 and MaxPageSize 1", opts: flyapitest.Options{PageSize: 1, MaxPageSize: 1}, org: integOrg, pageCap: 1},
		{name: "MaxPageSize 3, partial last page", opts: flyapitest.Options{MaxPageSize: 3}, org: integOrg, pageCap: 3},
		{name: "MaxPageSize 7, exactly one full page", opts: flyapitest.Options{MaxPageSize: nPeers}, org: integOrg, pageCap: nPeers},
		{name: "personal org via raw slug, MaxPageSize 2", opts: flyapitest.Options{MaxPageSize: 2}, org: integPersonalRaw, pageCap: 2},
		{name: "personal org via canonical slug, MaxPageSize 2", opts: flyapitest.Options{MaxPageSize: 2}, org: integPersonal, pageCap: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := integServer(t, tc.opts)
			c := integClient(t, srv)
			ctx := integCtx(t, integTimeout)
			pages := func(n int) int {
				if n == 0 {
					return 1
				}
				return (n + tc.pageCap - 1) / tc.pageCap
			}

			org, err := c.Organization(ctx, tc.org)
			if err != nil {
				t.Fatal(err)
			}
			region, err := c.NearestGatewayRegion(ctx)
			if err != nil {
				t.Fatal(err)
			}

			// A peer in the other org: it must never show up here.
			otherOrg := integPersonal
			if org.Slug == integPersonal {
				otherOrg = integOrg
			}
			other := integKey(t)
			if _, err := srv.AddPeer(otherOrg, "integ-other-org", other.Public.String()); err != nil {
				t.Fatal(err)
			}

			keys := map[string]wgquick.KeyPair{}
			created := map[string]*flyapi.CreatedPeer{}
			for i := 0; i < nPeers; i++ {
				name := fmt.Sprintf("integ-peer-%d", i)
				kp := integKey(t)
				in := flyapi.AddPeerInput{Org: *org, Name: name, PublicKey: kp.Public, Region: region}
				wantReqs := 1
				if i == 0 {
					// Org given by slug only: AddPeer takes the ID from
					// the cache the lookup above filled.
					in.Org = flyapi.Organization{Slug: tc.org}
				}
				var cp *flyapi.CreatedPeer
				n := integDelta(srv, func() { cp, err = c.AddPeer(ctx, in) })
				if err != nil {
					t.Fatalf("AddPeer(%s): %v", name, err)
				}
				if n != wantReqs {
					t.Errorf("AddPeer(%s): requests = %d, want %d", name, n, wantReqs)
				}
				integCheckCreated(t, srv, c, cp, kp, tc.org, name)
				keys[name], created[name] = kp, cp
			}

			var listed []flyapi.Peer
			n := integDelta(srv, func() { listed, err = c.ListPeers(ctx, tc.org) })
			if err != nil {
				t.Fatalf("ListPeers: %v", err)
			}
			if want := pages(nPeers); n != want {
				t.Errorf("ListPeers: %d requests, want %d pages of at most %d", n, want, tc.pageCap)
			}
			seen := map[string]int{}
			ids := map[string]bool{}
			for _, p := range listed {
				seen[p.Name]++
				if ids[p.ID] || p.ID == "" {
					t.Errorf("peer ID %q empty or repeated", p.ID)
				}
				ids[p.ID] = true
				kp, ok := keys[p.Name]
				if !ok {
					t.Errorf("unexpected peer listed: %+v", p)
					continue
				}
				if p.PublicKey != kp.Public.String() || p.PeerIP != created[p.Name].PeerIP.String() || p.Region != region {
					t.Errorf("listed %+v, want pubkey %s peerip %s region %s", p, kp.Public, created[p.Name].PeerIP, region)
				}
			}
			for name := range keys {
				if seen[name] != 1 {
					t.Errorf("peer %q listed %d times, want exactly once", name, seen[name])
				}
			}
			if len(listed) != nPeers {
				t.Errorf("ListPeers returned %d peers, want %d", len(listed), nPeers)
			}

			// Validate: every created IP is valid; unknown ones are not.
			var ips []string
			for _, cp := range created {
				ips = append(ips, cp.PeerIP.String())
			}
			slices.Sort(ips)
			query := append(slices.Clone(ips), integUnknownIP, "fdaa:ffff:ffff::2")
			var invalid []string
			n = integDelta(srv, func() { invalid, err = c.ValidatePeers(ctx, query) })
			if err != nil {
				t.Fatalf("ValidatePeers: %v", err)
			}
			if n != 1 {
				t.Errorf("ValidatePeers: %d requests, want 1", n)
			}
			if want := []string{integUnknownIP, "fdaa:ffff:ffff::2"}; !slices.Equal(invalid, want) {
				t.Errorf("ValidatePeers invalid = %v, want %v", invalid, want)
			}

			// Remove, alternating the full org (remove, then one
			// single-peer lookup to confirm, whatever the page size) and
			// the ID-only form (remove only). Never a listing.
			i := 0
			for name := range keys {
				o, want := flyapi.Organization{ID: org.ID}, 1
				if i%2 == 0 {
					o, want = *org, 2
				}
				i++
				n := integDelta(srv, func() { err = c.RemovePeer(ctx, o, name) })
				if err != nil {
					t.Fatalf("RemovePeer(%s): %v", name, err)
				}
				if n != want {
					t.Errorf("RemovePeer(%s, %+v): %d requests, want %d", name, o, n, want)
				}
				integNoPeer(t, srv, tc.org, name)
			}

			n = integDelta(srv, func() { listed, err = c.ListPeers(ctx, tc.org) })
			if err != nil || len(listed) != 0 || n != 1 {
				t.Fatalf("ListPeers after removal = %+v, %v (%d requests), want empty in 1 request", listed, err, n)
			}
			if got := srv.Peers(tc.org); len(got) != 0 {
				t.Errorf("double still has peers: %+v", got)
			}

			// Removing an unknown name is success, in both forms.
			for _, o := range []flyapi.Organization{*org, {ID: org.ID}, {RawSlug: org.RawSlug}} {
				if err := c.RemovePeer(ctx, o, "integ-never-existed"); err != nil {
					t.Errorf("RemovePeer(%+v, unknown) = %v, want nil", o, err)
				}
			}

			// Now every former IP is invalid.
			invalid, err = c.ValidatePeers(ctx, ips)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(invalid)
			if !slices.Equal(invalid, ips) {
				t.Errorf("ValidatePeers after removal = %v, want all of %v", invalid, ips)
			}
			// The other org's peer was never touched.
			integOnePeer(t, srv, otherOrg, "integ-other-org", other.Public)
		})
	}
}

func TestIntegrationValidatePeers(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	c := integClient(t, srv)
	a, err := srv.AddPeer(integOrg, "integ-a", integKey(t).Public.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := srv.AddPeer(integPersonal, "integ-b", integKey(t).Public.String())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		ips         []string
		wantInvalid []string
		wantErr     func(error) bool
		wantReqs    int
	}{
		{name: "all valid, across orgs", ips: []string{a.PeerIP.String(), b.PeerIP.String()}, wantInvalid: []string{}, wantReqs: 1},
		{name: "split valid and invalid", ips: []string{integUnknownIP, a.PeerIP.String(), "fd00::2", b.PeerIP.String()}, wantInvalid: []string{integUnknownIP, "fd00::2"}, wantReqs: 1},
		{name: "all invalid", ips: []string{integUnknownIP}, wantInvalid: []string{integUnknownIP}, wantReqs: 1},
		{name: "empty list makes no call", ips: nil, wantInvalid: nil, wantReqs: 0},
		{name: "non-IP is refused without a request", ips: []string{a.PeerIP.String(), "not-an-ip"}, wantErr: flyapi.IsInvalid, wantReqs: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := integCtx(t, integTimeout)
			var got []string
			var err error
			n := integDelta(srv, func() { got, err = c.ValidatePeers(ctx, tc.ips) })
			if n != tc.wantReqs {
				t.Errorf("requests = %d, want %d", n, tc.wantReqs)
			}
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("ValidatePeers(%v) = %v, %s", tc.ips, got, integKinds(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.wantInvalid) || (len(got) > 0 && !slices.Equal(got, tc.wantInvalid)) {
				t.Errorf("invalid = %q, want %q", got, tc.wantInvalid)
			}
		})
	}
}

func TestIntegrationAddPeerConflict(t *testing.T) {
	const name = "integ-dup"
	tests := []struct {
		name string
		// seed creates the existing peer "integ-dup" with key orig; via
		// the client (true) or out of band in the double (false).
		viaClient bool
		// newName is the name AddPeer is called with ("" = integ-dup).
		newName string
		sameKey bool
		// wantConflict: AddPeer must fail with IsConflict; otherwise it
		// must succeed (re-adding our own name and key is reconciled).
		wantConflict bool
		wantReqs     int
	}{
		// add (Name has already been taken) + list to compare keys.
		{name: "other key, peer made by the client", viaClient: true, wantConflict: true, wantReqs: 2},
		{name: "other key, peer made by someone else", viaClient: false, wantConflict: true, wantReqs: 2},
		// add (taken) + list (ours) + remove + add.
		{name: "same name and key again is reconciled to one peer", viaClient: true, sameKey: true, wantReqs: 4},
		// add (Pubkey has already been taken) + list (name absent).
		{name: "same key under another name", viaClient: true, newName: "integ-other", sameKey: true, wantConflict: true, wantReqs: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := integServer(t, flyapitest.Options{})
			c := integClient(t, srv)
			ctx := integCtx(t, integTimeout)
			org := integOrgOf(t, srv, integOrg)
			orig := integKey(t)
			if tc.viaClient {
				if _, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: name, PublicKey: orig.Public}); err != nil {
					t.Fatal(err)
				}
			} else if _, err := srv.AddPeer(integOrg, name, orig.Public.String()); err != nil {
				t.Fatal(err)
			}
			before := integOnePeer(t, srv, integOrg, name, orig.Public)

			kp := integKey(t)
			if tc.sameKey {
				kp = orig
			}
			newName := name
			if tc.newName != "" {
				newName = tc.newName
			}
			var cp *flyapi.CreatedPeer
			var err error
			n := integDelta(srv, func() {
				cp, err = c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: newName, PublicKey: kp.Public})
			})
			if n != tc.wantReqs {
				t.Errorf("requests = %d, want %d", n, tc.wantReqs)
			}
			integNoSecret(t, srv, err)
			if !tc.wantConflict {
				if err != nil {
					t.Fatalf("AddPeer(same name, same key) = %s", integKinds(err))
				}
				integCheckCreated(t, srv, c, cp, kp, integOrg, name)
				return
			}
			if !flyapi.IsConflict(err) || cp != nil {
				t.Fatalf("AddPeer(%s) = %+v, %s; want IsConflict", newName, cp, integKinds(err))
			}
			if !strings.Contains(err.Error(), `"`+newName+`"`) {
				t.Errorf("conflict error %q does not name the peer", err)
			}
			after := integOnePeer(t, srv, integOrg, name, orig.Public)
			if after.ID != before.ID || after.PeerIP != before.PeerIP {
				t.Errorf("existing peer changed: %+v -> %+v", before, after)
			}
			if got := srv.Peers(""); len(got) != 1 {
				t.Errorf("double has %d peers, want 1: %+v", len(got), got)
			}
			if newName != name {
				// The server's reason must reach the caller.
				if !strings.Contains(err.Error(), "Pubkey has already been taken") {
					t.Errorf("error %q hides the server's reason", err)
				}
				// It is the public key that is taken, not the name.
				if strings.Contains(err.Error(), fmt.Sprintf("peer name %q already exists", newName)) || !strings.Contains(err.Error(), "public key") {
					t.Errorf("a public-key conflict is reported as something else: %v", err)
				}
			}
		})
	}
}

// TestIntegrationAddPeerRejected: inputs the client or the double refuse
// leave no peer behind and are not retried.
func TestIntegrationAddPeerRejected(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	c := integClient(t, srv)
	acme := integOrgOf(t, srv, integOrg)
	tests := []struct {
		name     string
		in       func(kp wgquick.KeyPair) flyapi.AddPeerInput
		wantErr  func(error) bool
		wantSub  string
		wantReqs int
	}{
		{name: "invalid name, refused by the client", in: func(kp wgquick.KeyPair) flyapi.AddPeerInput {
			return flyapi.AddPeerInput{Org: acme, Name: "Bad_Name", PublicKey: kp.Public}
		}, wantErr: flyapi.IsInvalid, wantReqs: 0},
		{name: "zero public key, refused by the client", in: func(wgquick.KeyPair) flyapi.AddPeerInput {
			return flyapi.AddPeerInput{Org: acme, Name: "integ-rej"}
		}, wantErr: flyapi.IsInvalid, wantReqs: 0},
		{name: "region without a gateway", in: func(kp wgquick.KeyPair) flyapi.AddPeerInput {
			return flyapi.AddPeerInput{Org: acme, Name: "integ-rej", PublicKey: kp.Public, Region: "gru"}
		}, wantErr: flyapi.IsInvalid, wantSub: "gru", wantReqs: 1},
		{name: "unknown org slug names the slug", in: func(kp wgquick.KeyPair) flyapi.AddPeerInput {
			return flyapi.AddPeerInput{Org: flyapi.Organization{Slug: "nope-org"}, Name: "integ-rej", PublicKey: kp.Public}
		}, wantErr: flyapi.IsNotFound, wantSub: `"nope-org"`, wantReqs: 1},
		{name: "stale org ID", in: func(kp wgquick.KeyPair) flyapi.AddPeerInput {
			return flyapi.AddPeerInput{Org: flyapi.Organization{ID: "T3JnYW5pemF0aW9uLzE=", Slug: integOrg}, Name: "integ-rej", PublicKey: kp.Public}
		}, wantErr: flyapi.IsNotFound, wantReqs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := integDelta(srv, func() { _, err = c.AddPeer(integCtx(t, integTimeout), tc.in(integKey(t))) })
			if !tc.wantErr(err) {
				t.Fatalf("AddPeer = %s", integKinds(err))
			}
			if !strings.Contains(err.Error(), tc.wantSub) {
				t.Errorf("error %q does not contain %s", err, tc.wantSub)
			}
			if n != tc.wantReqs {
				t.Errorf("requests = %d, want %d", n, tc.wantReqs)
			}
			if got := srv.Peers(""); len(got) != 0 {
				t.Fatalf("double has peers: %+v", got)
			}
		})
	}
	t.Run("RemovePeer in an unknown org names the slug", func(t *testing.T) {
		var err error
		n := integDelta(srv, func() {
			err = c.RemovePeer(integCtx(t, integTimeout), flyapi.Organization{Slug: "nope-org"}, "integ-rej")
		})
		if !flyapi.IsNotFound(err) || !strings.Contains(err.Error(), `"nope-org"`) || n != 1 {
			t.Fatalf("RemovePeer = %s in %d requests", integKinds(err), n)
		}
	})
}

// ---------------------------------------------------------------------------
// Scripted faults, for every operation.

type integState struct {
	org     flyapi.Organization
	name    string
	kp      wgquick.KeyPair
	seeded  []string
	knownIP string

	gotOrg     *flyapi.Organization
	gotRegion  string
	gotPeers   []flyapi.Peer
	gotCreated *flyapi.CreatedPeer
	gotInvalid []string
}

type integOp struct {
	name  string
	field string // top-level GraphQL field the fault targets
	// pre/post: requests the call makes before/after the faulted request
	// (RemovePeer looks the peer up after). reconcile: extra requests per
	// ambiguous failure (AddPeer looks the peer up). recreate: extra
	// requests when the reconcile finds our own peer (AddPeer removes it).
	// failConfirm: requests after the faulted request failed for good
	// with a retryable error (RemovePeer looks the peer up: an earlier
	// attempt may have removed it).
	pre, post, reconcile, recreate, failConfirm int
	// effect: the faulted request changes the double's state when applied.
	effect bool
	seed   func(t *testing.T, srv *flyapitest.Server, s *integState)
	call   func(ctx context.Context, c *flyapi.Client, s *integState) error
	// applied checks the state once the operation took effect (s.got*
	// may be zero when the call failed); unapplied checks it did not.
	applied   func(t *testing.T, srv *flyapitest.Server, c *flyapi.Client, s *integState)
	unapplied func(t *testing.T, srv *flyapitest.Server, s *integState)
}

func integOps() []integOp {
	nop := func(*testing.T, *flyapitest.Server, *integState) {}
	seedPeer := func(t *testing.T, srv *flyapitest.Server, s *integState) {
		p, err := srv.AddPeer(integOrg, s.name, s.kp.Public.String())
		if err != nil {
			t.Fatal(err)
		}
		s.knownIP = p.PeerIP.String()
	}
	return []integOp{
		{
			name: "Organization", field: "organization",
			seed: nop,
			call: func(ctx context.Context, c *flyapi.Client, s *integState) (err error) {
				s.gotOrg, err = c.Organization(ctx, integOrg)
				return err
			},
			applied: func(t *testing.T, srv *flyapitest.Server, _ *flyapi.Client, s *integState) {
				if s.gotOrg == nil || s.gotOrg.ID != srv.OrgID(integOrg) || s.gotOrg.Slug != integOrg {
					t.Errorf("Organization = %+v, want ID %q", s.gotOrg, srv.OrgID(integOrg))
				}
			},
			unapplied: nop,
		},
		{
			name: "NearestGatewayRegion", field: "nearestRegion",
			seed: nop,
			call: func(ctx context.Context, c *flyapi.Client, s *integState) (err error) {
				s.gotRegion, err = c.NearestGatewayRegion(ctx)
				return err
			},
			applied: func(t *testing.T, srv *flyapitest.Server, _ *flyapi.Client, s *integState) {
				if s.gotRegion != srv.Region() {
					t.Errorf("region = %q, want %q", s.gotRegion, srv.Region())
				}
			},
			unapplied: nop,
		},
		{
			name: "ListPeers", field: "organization",
			seed: func(t *testing.T, srv *flyapitest.Server, s *integState) {
				for i := 0; i < 3; i++ {
					n := fmt.Sprintf("integ-list-%d", i)
					if _, err := srv.AddPeer(integOrg, n, integKey(t).Public.String()); err != nil {
						t.Fatal(err)
					}
					s.seeded = append(s.seeded, n)
				}
			},
			call: func(ctx context.Context, c *flyapi.Client, s *integState) (err error) {
				s.gotPeers, err = c.ListPeers(ctx, integOrg)
				return err
			},
			applied: func(t *testing.T, _ *flyapitest.Server, _ *flyapi.Client, s *integState) {
				var names []string
				for _, p := range s.gotPeers {
					names = append(names, p.Name)
				}
				if !slices.Equal(names, s.seeded) {
					t.Errorf("ListPeers names = %v, want each of %v exactly once", names, s.seeded)
				}
			},
			unapplied: nop,
		},
		{
			name: "AddPeer", field: "addWireGuardPeer", reconcile: 1, recreate: 1, effect: true,
			seed: nop,
			call: func(ctx context.Context, c *flyapi.Client, s *integState) (err error) {
				s.gotCreated, err = c.AddPeer(ctx, flyapi.AddPeerInput{Org: s.org, Name: s.name, PublicKey: s.kp.Public})
				return err
			},
			applied: func(t *testing.T, srv *flyapitest.Server, c *flyapi.Client, s *integState) {
				integOnePeer(t, srv, integOrg, s.name, s.kp.Public)
				if s.gotCreated != nil {
					integCheckCreated(t, srv, c, s.gotCreated, s.kp, integOrg, s.name)
				}
				if n := len(srv.Peers("")); n != 1 {
					t.Errorf("double has %d peers in total, want 1", n)
				}
			},
			unapplied: func(t *testing.T, srv *flyapitest.Server, s *integState) {
				integNoPeer(t, srv, integOrg, s.name)
			},
		},
		{
			name: "RemovePeer", field: "removeWireGuardPeer", post: 1, failConfirm: 1, effect: true,
			seed: seedPeer,
			call: func(ctx context.Context, c *flyapi.Client, s *integState) error {
				return c.RemovePeer(ctx, s.org, s.name)
			},
			applied: func(t *testing.T, srv *flyapitest.Server, _ *flyapi.Client, s *integState) {
				integNoPeer(t, srv, integOrg, s.name)
			},
			unapplied: func(t *testing.T, srv *flyapitest.Server, s *integState) {
				integOnePeer(t, srv, integOrg, s.name, s.kp.Public)
			},
		},
		{
			name: "ValidatePeers", field: "validateWireGuardPeers",
			seed: seedPeer,
			call: func(ctx context.Context, c *flyapi.Client, s *integState) (err error) {
				s.gotInvalid, err = c.ValidatePeers(ctx, []string{s.knownIP, integUnknownIP})
				return err
			},
			applied: func(t *testing.T, _ *flyapitest.Server, _ *flyapi.Client, s *integState) {
				if !slices.Equal(s.gotInvalid, []string{integUnknownIP}) {
					t.Errorf("invalid = %v, want [%s]", s.gotInvalid, integUnknownIP)
				}
			},
			unapplied: nop,
		},
	}
}

type integOutcome int

const (
	integSuccess integOutcome = iota
	integUnauthorized
	integRateLimited
	integTransient
	integDeadline
)

type integFaultCase struct {
	name       string
	fault      flyapitest.Fault // Op is set per operation
	maxRetries int              // client MaxRetries; 0 = default (3)
	// httpTimeout, if set, is the client's per-exchange HTTP timeout.
	httpTimeout time.Duration
	ctxTimeout  time.Duration // 0 = integTimeout
	want        integOutcome
	// wantByOp overrides want for some operations.
	wantByOp map[string]integOutcome
	// applies: the faulted requests take effect (apply-then-502).
	applies bool
	// reqs is the exact number of GraphQL requests the call must make.
	reqs func(op integOp, retries int) int
	// minElapsed/maxElapsed bound the call's duration (0 = unchecked).
	minElapsed, maxElapsed time.Duration
	// check runs extra assertions on the error.
	check func(t *testing.T, err error)
}

func integFaultCases() []integFaultCase {
	// unauthorized: one attempt, no retry.
	noRetry := func(op integOp, _ int) int { return op.pre + 1 }
	// a retried non-ambiguous failure: one extra attempt.
	retriedOnce := func(op integOp, _ int) int { return op.pre + 2 + op.post }
	// a retried ambiguous failure: AddPeer also lists to reconcile.
	ambiguousOnce := func(op integOp, _ int) int { return op.pre + 2 + op.reconcile + op.post }
	// ambiguous forever: every attempt (and AddPeer's reconcile) repeated.
	ambiguousForever := func(op integOp, r int) int { return op.pre + (r+1)*(1+op.reconcile) + op.failConfirm }
	fault := func(k flyapitest.FaultKind, times int) flyapitest.Fault {
		return flyapitest.Fault{Kind: k, Times: times}
	}
	unauthorized := func(t *testing.T, err error) {
		if !strings.Contains(err.Error(), integTokenSource) {
			t.Errorf("unauthorized error %q does not say which variable the token came from (%s)", err, integTokenSource)
		}
		var e *flyapi.Error
		if errors.As(err, &e) && e.HTTPStatus != 401 && e.Code != "UNAUTHORIZED" {
			t.Errorf("unauthorized error has HTTP %d code %q", e.HTTPStatus, e.Code)
		}
	}
	retryAfter := func(want time.Duration) func(*testing.T, error) {
		return func(t *testing.T, err error) {
			var e *flyapi.Error
			if !errors.As(err, &e) || e.RetryAfter != want {
				t.Errorf("error RetryAfter = %v, want %v (%v)", e, want, err)
			}
		}
	}
	cases := []integFaultCase{
		{name: "http401 once", fault: fault(flyapitest.FaultHTTP401, 1), want: integUnauthorized, reqs: noRetry, check: unauthorized},
		{name: "http401 forever", fault: fault(flyapitest.FaultHTTP401, 0), want: integUnauthorized, reqs: noRetry, check: unauthorized},
		{name: "UNAUTHORIZED code once", fault: fault(flyapitest.FaultUnauthorizedCode, 1), want: integUnauthorized, reqs: noRetry, check: unauthorized},
		{name: "UNAUTHORIZED code forever", fault: fault(flyapitest.FaultUnauthorizedCode, 0), want: integUnauthorized, reqs: noRetry, check: unauthorized},

		// The double sends Retry-After in whole seconds (1s minimum).
		{name: "429 once honours Retry-After", fault: flyapitest.Fault{Kind: flyapitest.Fault429, Times: 1, RetryAfter: time.Second},
			want: integSuccess, reqs: retriedOnce, minElapsed: 900 * time.Millisecond, maxElapsed: 5 * time.Second},
		{name: "429 forever", fault: flyapitest.Fault{Kind: flyapitest.Fault429, RetryAfter: time.Second}, maxRetries: 1,
			want: integRateLimited, reqs: func(op integOp, _ int) int { return op.pre + 2 + op.failConfirm }, minElapsed: 900 * time.Millisecond, maxElapsed: 5 * time.Second,
			check: retryAfter(time.Second)},
		{name: "429 with Retry-After beyond a minute gives up at once", fault: flyapitest.Fault{Kind: flyapitest.Fault429, Times: 1, RetryAfter: 2 * time.Minute},
			want: integRateLimited, reqs: func(op integOp, _ int) int { return op.pre + 1 + op.failConfirm }, maxElapsed: 2 * time.Second, check: retryAfter(2 * time.Minute)},
		{name: "429 with Retry-After past the deadline gives up at once", fault: flyapitest.Fault{Kind: flyapitest.Fault429, RetryAfter: 5 * time.Second},
			ctxTimeout: 2 * time.Second, want: integDeadline, reqs: func(op integOp, _ int) int { return op.pre + 1 + op.failConfirm }, maxElapsed: time.Second,
			check: func(t *testing.T, err error) {
				if !flyapi.IsRateLimited(err) {
					t.Errorf("error does not match IsRateLimited: %v", err)
				}
			}},

		{name: "502 once", fault: fault(flyapitest.Fault502, 1), want: integSuccess, reqs: ambiguousOnce},
		{name: "503 once", fault: fault(flyapitest.Fault503, 1), want: integSuccess, reqs: ambiguousOnce},
		{name: "SERVER_ERROR code once", fault: fault(flyapitest.FaultServerErrorCode, 1), want: integSuccess, reqs: ambiguousOnce},
		{name: "dropped connection once", fault: fault(flyapitest.FaultDropConnection, 1), want: integSuccess, reqs: ambiguousOnce},
		{name: "502 forever", fault: fault(flyapitest.Fault502, 0), want: integTransient, reqs: ambiguousForever},
		{name: "503 forever", fault: fault(flyapitest.Fault503, 0), want: integTransient, reqs: ambiguousForever},
		{name: "SERVER_ERROR code forever", fault: fault(flyapitest.FaultServerErrorCode, 0), want: integTransient, reqs: ambiguousForever},
		{name: "dropped connection forever", fault: fault(flyapitest.FaultDropConnection, 0), want: integTransient, reqs: ambiguousForever},
		{name: "502 forever with MaxRetries 1", fault: fault(flyapitest.Fault502, 0), maxRetries: 1, want: integTransient, reqs: ambiguousForever},

		{name: "apply then 502 once", fault: fault(flyapitest.FaultApplyThen502, 1), want: integSuccess, applies: true,
			// AddPeer finds its own peer, removes it and creates it again;
			// the others simply retry. RemovePeer's retry gets NOT_FOUND,
			// which is success without the confirming list (no op.post).
			reqs: func(op integOp, _ int) int { return op.pre + 2 + op.reconcile + op.recreate }},
		// RemovePeer succeeds: its lookup after the failed attempts
		// finds the peer gone.
		{name: "apply then 502 forever", fault: fault(flyapitest.FaultApplyThen502, 0), want: integTransient, applies: true,
			wantByOp: map[string]integOutcome{"RemovePeer": integSuccess},
			reqs: func(op integOp, r int) int {
				if op.reconcile > 0 {
					// add, lookup (ours), remove, add, lookup (ours again): stop.
					return 2*(1+op.reconcile) + op.recreate
				}
				return op.pre + r + 1 + op.failConfirm
			}},

		{name: "slow past the deadline", fault: flyapitest.Fault{Kind: flyapitest.FaultSlow, Delay: 10 * time.Second},
			ctxTimeout: 300 * time.Millisecond, want: integDeadline, reqs: noRetry,
			minElapsed: 250 * time.Millisecond, maxElapsed: 2 * time.Second},
		// The HTTP client's own timeout (not the context) cuts the slow
		// answers: an ambiguous failure like a 502.
		{name: "slow past the HTTP client timeout once", fault: flyapitest.Fault{Kind: flyapitest.FaultSlow, Times: 1, Delay: 5 * time.Second},
			httpTimeout: 100 * time.Millisecond, want: integSuccess, reqs: ambiguousOnce, maxElapsed: 3 * time.Second},
		{name: "slow past the HTTP client timeout forever", fault: flyapitest.Fault{Kind: flyapitest.FaultSlow, Delay: 5 * time.Second},
			httpTimeout: 100 * time.Millisecond, want: integTransient, reqs: ambiguousForever, maxElapsed: 4 * time.Second},
		{name: "slow within the deadline", fault: flyapitest.Fault{Kind: flyapitest.FaultSlow, Times: 1, Delay: 150 * time.Millisecond},
			want: integSuccess, reqs: func(op integOp, _ int) int { return op.pre + 1 + op.post },
			minElapsed: 150 * time.Millisecond, maxElapsed: 5 * time.Second},
	}
	return cases
}

func TestIntegrationFaults(t *testing.T) {
	for _, fc := range integFaultCases() {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			for _, op := range integOps() {
				t.Run(op.name, func(t *testing.T) {
					integRunFault(t, op, fc)
				})
			}
		})
	}
}

func integRunFault(t *testing.T, op integOp, fc integFaultCase) {
	srv := integServer(t, flyapitest.Options{})
	retries := fc.maxRetries
	c := integClient(t, srv, func(o *flyapi.Options) {
		o.MaxRetries = retries
		if fc.httpTimeout > 0 {
			o.HTTPClient = &http.Client{Timeout: fc.httpTimeout}
		}
	})
	if retries == 0 {
		retries = flyapi.DefaultMaxRetries
	}
	s := &integState{org: integOrgOf(t, srv, integOrg), name: "integ-fault", kp: integKey(t)}
	op.seed(t, srv, s)

	f := fc.fault
	f.Op = op.field
	srv.Faults().Set(f)
	timeout := fc.ctxTimeout
	if timeout == 0 {
		timeout = integTimeout
	}
	ctx := integCtx(t, timeout)
	start := time.Now()
	var err error
	n := integDelta(srv, func() { err = op.call(ctx, c, s) })
	elapsed := time.Since(start)
	if srv.Faults().Fired() == 0 {
		t.Fatalf("fault %v on %q never fired", f.Kind, f.Op)
	}
	if f.Times == 1 && srv.Faults().Pending() != 0 {
		t.Errorf("fault %v on %q (Times 1) not consumed", f.Kind, f.Op)
	}
	srv.Faults().Clear()

	if want := fc.reqs(op, retries); n != want {
		t.Errorf("requests = %d, want %d (%s)", n, want, integKinds(err))
	}
	if fc.minElapsed > 0 && elapsed < fc.minElapsed {
		t.Errorf("returned after %v, want at least %v", elapsed, fc.minElapsed)
	}
	if fc.maxElapsed > 0 && elapsed > fc.maxElapsed {
		t.Errorf("returned after %v, want at most %v", elapsed, fc.maxElapsed)
	}
	integNoSecret(t, srv, err)

	var ok bool
	want := fc.want
	if w, found := fc.wantByOp[op.name]; found {
		want = w
	}
	switch want {
	case integSuccess:
		ok = err == nil
	case integUnauthorized:
		ok = flyapi.IsUnauthorized(err)
	case integRateLimited:
		ok = flyapi.IsRateLimited(err)
	case integTransient:
		ok = flyapi.IsTransient(err)
	case integDeadline:
		ok = errors.Is(err, context.DeadlineExceeded)
	}
	if !ok {
		t.Fatalf("%s under %s: got %s", op.name, fc.name, integKinds(err))
	}
	if err != nil && fc.check != nil {
		fc.check(t, err)
	}
	if err == nil || (fc.applies && op.effect) {
		op.applied(t, srv, c, s)
	} else {
		op.unapplied(t, srv, s)
	}

	// Whatever happened, the client converges once the fault is gone.
	if op.effect {
		ctx2 := integCtx(t, integTimeout)
		if err := op.call(ctx2, c, s); err != nil {
			t.Fatalf("%s again without faults: %v", op.name, err)
		}
		op.applied(t, srv, c, s)
	}
}

// TestIntegrationAmbiguousAdd: after an addWireGuardPeer that took effect but
// whose answer was lost, AddPeer never leaves two peers of one name, and
// what it returns matches what the double has.
func TestIntegrationAmbiguousAdd(t *testing.T) {
	const name = "integ-ambiguous"
	tests := []struct {
		name    string
		faults  []flyapitest.Fault
		wantErr bool
		// wantPeer: after the call the double holds exactly one peer of
		// that name with our key (else none).
		wantPeer bool
		// idOnly: the org is given by node ID only, so AddPeer cannot
		// list to reconcile and must return the ambiguous error.
		idOnly bool
	}{
		{name: "apply then 502 once", faults: []flyapitest.Fault{{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 1}}, wantPeer: true},
		{name: "apply then 502 twice", faults: []flyapitest.Fault{{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 2}}, wantErr: true, wantPeer: true},
		{name: "apply then 502, then 503 on the re-create", faults: []flyapitest.Fault{
			{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 1},
			{Op: "addWireGuardPeer", Kind: flyapitest.Fault503, Times: 1},
		}, wantPeer: true},
		{name: "apply then 502, and listing to reconcile fails", faults: []flyapitest.Fault{
			{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 1},
			{Op: "organization", Kind: flyapitest.Fault502},
		}, wantErr: true, wantPeer: true},
		{name: "apply then 502, and the reconciling remove is rate limited once", faults: []flyapitest.Fault{
			{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 1},
			{Op: "removeWireGuardPeer", Kind: flyapitest.Fault429, Times: 1, RetryAfter: time.Second},
		}, wantPeer: true},
		{name: "502 on create, then dropped connection on the reconciling list", faults: []flyapitest.Fault{
			{Op: "addWireGuardPeer", Kind: flyapitest.Fault502, Times: 1},
			{Op: "organization", Kind: flyapitest.FaultDropConnection, Times: 1},
		}, wantPeer: true},
		{name: "org ID only: 502 once is returned, not blindly retried", idOnly: true, faults: []flyapitest.Fault{
			{Op: "addWireGuardPeer", Kind: flyapitest.Fault502, Times: 1},
		}, wantErr: true, wantPeer: false},
		{name: "org ID only: apply then 502 is returned, not blindly retried", idOnly: true, faults: []flyapitest.Fault{
			{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 1},
		}, wantErr: true, wantPeer: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := integServer(t, flyapitest.Options{})
			c := integClient(t, srv)
			org := integOrgOf(t, srv, integOrg)
			in := flyapi.AddPeerInput{Org: org, Name: name}
			if tc.idOnly {
				in.Org = flyapi.Organization{ID: org.ID}
			}
			kp := integKey(t)
			in.PublicKey = kp.Public
			srv.Faults().Set(tc.faults...)
			ctx := integCtx(t, integTimeout)
			var cp *flyapi.CreatedPeer
			var err error
			n := integDelta(srv, func() { cp, err = c.AddPeer(ctx, in) })
			srv.Faults().Clear()
			integNoSecret(t, srv, err)
			if n > 12 || (tc.idOnly && n != 1) {
				t.Errorf("%d requests: retry storm or blind retry", n)
			}
			if tc.wantErr {
				if err == nil || cp != nil {
					t.Fatalf("AddPeer = %+v, %v; want an error", cp, err)
				}
				if !flyapi.IsRetryable(err) {
					t.Errorf("error is not retryable: %s", integKinds(err))
				}
			} else if err != nil {
				t.Fatalf("AddPeer: %s", integKinds(err))
			}
			if tc.wantPeer {
				integOnePeer(t, srv, integOrg, name, kp.Public)
			} else {
				integNoPeer(t, srv, integOrg, name)
			}
			if n := len(srv.Peers("")); n > 1 {
				t.Fatalf("double has %d peers, want at most 1: %+v", n, srv.Peers(""))
			}
			if !tc.wantErr {
				integCheckCreated(t, srv, c, cp, kp, integOrg, name)
				return
			}
			// A caller retrying the same name and key (with the org's
			// slug) converges on one working peer.
			cp, err = c.AddPeer(integCtx(t, integTimeout), flyapi.AddPeerInput{Org: org, Name: name, PublicKey: kp.Public})
			if err != nil {
				t.Fatalf("AddPeer retried without faults: %v", err)
			}
			integCheckCreated(t, srv, c, cp, kp, integOrg, name)
		})
	}
}

// TestIntegrationAmbiguousRemove: a removal applied but answered 502 is
// still success, with or without the slug.
func TestIntegrationAmbiguousRemove(t *testing.T) {
	const name = "integ-rm"
	tests := []struct {
		name     string
		org      func(srv *flyapitest.Server) flyapi.Organization
		times    int
		wantErr  bool
		wantReqs int
	}{
		// remove (applied, 502), remove (Could not find WireGuardPeer:
		// done, so no confirming lookup).
		{name: "with slug", org: func(srv *flyapitest.Server) flyapi.Organization {
			return flyapi.Organization{ID: srv.OrgID(integOrg), Slug: integOrg}
		}, times: 1, wantReqs: 2},
		// org lookup, remove, remove.
		{name: "slug only", org: func(*flyapitest.Server) flyapi.Organization { return flyapi.Organization{Slug: integOrg} }, times: 1, wantReqs: 3},
		// remove (applied, 502), remove (NOT_FOUND → success).
		{name: "ID only", org: func(srv *flyapitest.Server) flyapi.Organization { return flyapi.Organization{ID: srv.OrgID(integOrg)} }, times: 1, wantReqs: 2},
		// 4 removes all answered 502, then one lookup finds it gone.
		{name: "with slug, forever", org: func(srv *flyapitest.Server) flyapi.Organization {
			return flyapi.Organization{ID: srv.OrgID(integOrg), Slug: integOrg}
		}, times: 0, wantReqs: flyapi.DefaultMaxRetries + 2},
		// ID only: nothing to confirm with, the 502 is the answer.
		{name: "ID only, forever", org: func(srv *flyapitest.Server) flyapi.Organization { return flyapi.Organization{ID: srv.OrgID(integOrg)} },
			times: 0, wantErr: true, wantReqs: flyapi.DefaultMaxRetries + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := integServer(t, flyapitest.Options{})
			c := integClient(t, srv)
			kp := integKey(t)
			if _, err := srv.AddPeer(integOrg, name, kp.Public.String()); err != nil {
				t.Fatal(err)
			}
			keep := integKey(t)
			if _, err := srv.AddPeer(integOrg, "integ-keep", keep.Public.String()); err != nil {
				t.Fatal(err)
			}
			srv.Faults().Set(flyapitest.Fault{Op: "removeWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: tc.times})
			org := tc.org(srv)
			ctx := integCtx(t, integTimeout)
			var err error
			n := integDelta(srv, func() { err = c.RemovePeer(ctx, org, name) })
			if n != tc.wantReqs {
				t.Errorf("requests = %d, want %d", n, tc.wantReqs)
			}
			integNoPeer(t, srv, integOrg, name)
			integOnePeer(t, srv, integOrg, "integ-keep", keep.Public)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("RemovePeer: %s", integKinds(err))
				}
				return
			}
			if !flyapi.IsTransient(err) {
				t.Fatalf("RemovePeer = %s, want IsTransient", integKinds(err))
			}
			// With the slug, the same call succeeds: the lookup after
			// the failed mutations sees the peer gone.
			org.Slug = integOrg
			n = integDelta(srv, func() { err = c.RemovePeer(integCtx(t, integTimeout), org, name) })
			if err != nil || n != flyapi.DefaultMaxRetries+2 {
				t.Fatalf("RemovePeer with slug = %v in %d requests, want nil in %d", err, n, flyapi.DefaultMaxRetries+2)
			}
		})
	}
}

// TestIntegrationPaginationFaults: a fault on a later page is retried without
// losing or repeating peers. A 1ms FaultSlow rule lets the first pages
// through before the real fault fires.
func TestIntegrationPaginationFaults(t *testing.T) {
	const nPeers, pageCap = 5, 2 // 3 pages
	skip := func(pages int) flyapitest.Fault {
		return flyapitest.Fault{Op: "organization", Kind: flyapitest.FaultSlow, Delay: time.Millisecond, Times: pages}
	}
	tests := []struct {
		name     string
		faults   []flyapitest.Fault
		wantErr  func(error) bool
		wantReqs int
	}{
		{name: "no fault", wantReqs: 3},
		{name: "502 on page 2", faults: []flyapitest.Fault{skip(1), {Op: "organization", Kind: flyapitest.Fault502, Times: 1}}, wantReqs: 4},
		{name: "503 on page 3", faults: []flyapitest.Fault{skip(2), {Op: "organization", Kind: flyapitest.Fault503, Times: 1}}, wantReqs: 4},
		{name: "SERVER_ERROR on page 2", faults: []flyapitest.Fault{skip(1), {Op: "organization", Kind: flyapitest.FaultServerErrorCode, Times: 1}}, wantReqs: 4},
		{name: "dropped connection on page 3", faults: []flyapitest.Fault{skip(2), {Op: "organization", Kind: flyapitest.FaultDropConnection, Times: 1}}, wantReqs: 4},
		{name: "429 on page 2", faults: []flyapitest.Fault{skip(1), {Op: "organization", Kind: flyapitest.Fault429, Times: 1, RetryAfter: time.Second}}, wantReqs: 4},
		{name: "every request faulted once (Op empty)", faults: []flyapitest.Fault{{Kind: flyapitest.Fault502, Times: 1}}, wantReqs: 4},
		{name: "401 on page 2 fails the whole list", faults: []flyapitest.Fault{skip(1), {Op: "organization", Kind: flyapitest.FaultHTTP401, Times: 1}}, wantErr: flyapi.IsUnauthorized, wantReqs: 2},
		{name: "502 forever on page 3 fails the whole list", faults: []flyapitest.Fault{skip(2), {Op: "organization", Kind: flyapitest.Fault502}}, wantErr: flyapi.IsTransient, wantReqs: 2 + flyapi.DefaultMaxRetries + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := integServer(t, flyapitest.Options{MaxPageSize: pageCap})
			c := integClient(t, srv)
			var want []string
			for i := 0; i < nPeers; i++ {
				name := fmt.Sprintf("integ-page-%d", i)
				if _, err := srv.AddPeer(integOrg, name, integKey(t).Public.String()); err != nil {
					t.Fatal(err)
				}
				want = append(want, name)
			}
			srv.Faults().Set(tc.faults...)
			ctx := integCtx(t, integTimeout)
			var peers []flyapi.Peer
			var err error
			n := integDelta(srv, func() { peers, err = c.ListPeers(ctx, integOrg) })
			if n != tc.wantReqs {
				t.Errorf("requests = %d, want %d", n, tc.wantReqs)
			}
			if tc.wantErr != nil {
				if !tc.wantErr(err) || peers != nil {
					t.Fatalf("ListPeers = %d peers, %s; want no partial list and a typed error", len(peers), integKinds(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range peers {
				got = append(got, p.Name)
			}
			if !slices.Equal(got, want) {
				t.Errorf("ListPeers = %v, want %v (each exactly once)", got, want)
			}
		})
	}
}

// TestIntegrationAuth: the token forms a user may hold are all accepted; a
// rejected token is IsUnauthorized at once, says where the token came from
// and never shows it.
func TestIntegrationAuth(t *testing.T) {
	const addOnly = "fm2_integAddOnlyTokenSegmentAAAAAAAAAAAA"
	srv := integServer(t, flyapitest.Options{AddOnlyToken: "FlyV1 " + addOnly})
	bare := strings.TrimPrefix(srv.Token(), "FlyV1 ")
	if bare == srv.Token() {
		t.Fatalf("double token %q... is not in FlyV1 form", srv.Token()[:6])
	}
	wrong := "FlyV1 fm2_integWrongTokenSegmentBBBBBBBBBBBBBBBB,fm2_integWrongDischargeCCCCCCCC"

	accepted := []struct{ name, token string }{
		{"macaroon header form", srv.Token()},
		{"macaroon without scheme", bare},
		{"macaroon with Bearer FlyV1 schemes", "Bearer FlyV1 " + bare},
		{"macaroon with spaces around segments", " " + strings.ReplaceAll(bare, ",", " , ") + "\n"},
		{"user token bare", srv.UserToken()},
		{"user token with Bearer", "Bearer " + srv.UserToken()},
	}
	for _, tc := range accepted {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			c := integClient(t, srv, func(o *flyapi.Options) { o.Token = tc.token })
			var err error
			n := integDelta(srv, func() { _, err = c.Organization(integCtx(t, integTimeout), integOrg) })
			if err != nil || n != 1 {
				t.Fatalf("Organization with %s = %v (%d requests)", tc.name, err, n)
			}
		})
	}

	rejected := []struct {
		name string
		opts flyapitest.Options
	}{
		{"UNAUTHORIZED code (the real API)", flyapitest.Options{}},
		{"HTTP 401", flyapitest.Options{UnauthorizedHTTP401: true}},
	}
	for _, tc := range rejected {
		t.Run("rejected/"+tc.name, func(t *testing.T) {
			srv := integServer(t, tc.opts)
			c := integClient(t, srv, func(o *flyapi.Options) { o.Token = wrong })
			for _, op := range integOps() {
				t.Run(op.name, func(t *testing.T) {
					s := &integState{org: integOrgOf(t, srv, integOrg), name: "integ-auth", kp: integKey(t), knownIP: integUnknownIP}
					var err error
					n := integDelta(srv, func() { err = op.call(integCtx(t, integTimeout), c, s) })
					if !flyapi.IsUnauthorized(err) {
						t.Fatalf("%s with a wrong token = %s", op.name, integKinds(err))
					}
					// RemovePeer lists first; that listing is rejected.
					if n != 1 {
						t.Errorf("requests = %d, want 1 (no retry)", n)
					}
					if !strings.Contains(err.Error(), integTokenSource) {
						t.Errorf("error %q does not name %s", err, integTokenSource)
					}
					integNoSecret(t, srv, err, wrong)
				})
			}
		})
	}

	t.Run("add-only token cannot remove", func(t *testing.T) {
		c := integClient(t, srv, func(o *flyapi.Options) { o.Token = addOnly })
		ctx := integCtx(t, integTimeout)
		org := integOrgOf(t, srv, integOrg)
		kp := integKey(t)
		if _, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: "integ-ssh", PublicKey: kp.Public}); err != nil {
			t.Fatalf("AddPeer with an add-only token: %v", err)
		}
		var err error
		n := integDelta(srv, func() { err = c.RemovePeer(ctx, org, "integ-ssh") })
		if !flyapi.IsUnauthorized(err) {
			t.Fatalf("RemovePeer with an add-only token = %s", integKinds(err))
		}
		if n != 1 { // remove (rejected, not retried)
			t.Errorf("requests = %d, want 1", n)
		}
		integNoSecret(t, srv, err, addOnly)
		integOnePeer(t, srv, integOrg, "integ-ssh", kp.Public)
	})
}

// TestIntegrationConcurrent: one client used from several goroutines under
// intermittent faults; every peer ends up created exactly once and listed.
func TestIntegrationConcurrent(t *testing.T) {
	const workers = 6
	srv := integServer(t, flyapitest.Options{MaxPageSize: 2})
	c := integClient(t, srv)
	org := integOrgOf(t, srv, integOrg)
	srv.Faults().Set(
		flyapitest.Fault{Op: "addWireGuardPeer", Kind: flyapitest.FaultApplyThen502, Times: 2},
		flyapitest.Fault{Op: "addWireGuardPeer", Kind: flyapitest.Fault503, Times: 2},
		flyapitest.Fault{Op: "organization", Kind: flyapitest.FaultDropConnection, Times: 2},
	)
	ctx := integCtx(t, integTimeout)
	keys := make([]wgquick.KeyPair, workers)
	errs := make(chan error, workers)
	for i := range keys {
		keys[i] = integKey(t)
		go func(i int) {
			name := fmt.Sprintf("integ-conc-%d", i)
			cp, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: name, PublicKey: keys[i].Public})
			if err == nil && cp.GatewayPublicKey.String() != srv.GatewayPublicKey() {
				err = fmt.Errorf("%s: gateway key %s", name, cp.GatewayPublicKey)
			}
			if err == nil {
				_, err = c.ListPeers(ctx, integOrg)
			}
			errs <- err
		}(i)
	}
	for range keys {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("worker: %s", integKinds(err))
			}
		case <-ctx.Done():
			t.Fatal("workers did not finish in time")
		}
	}
	srv.Faults().Clear()
	for i, kp := range keys {
		integOnePeer(t, srv, integOrg, fmt.Sprintf("integ-conc-%d", i), kp.Public)
	}
	peers, err := c.ListPeers(ctx, integOrg)
	if err != nil || len(peers) != workers || len(srv.Peers("")) != workers {
		t.Fatalf("ListPeers = %d peers, %v; double has %d; want %d", len(peers), err, len(srv.Peers("")), workers)
	}
}

// TestIntegrationServerDown: with nothing listening, calls fail as transient
// promptly, and AddPeer retries directly (the request was certainly not
// applied) instead of trying to reconcile.
func TestIntegrationServerDown(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	c := integClient(t, srv)
	org := integOrgOf(t, srv, integOrg)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	kp := integKey(t)
	calls := map[string]func(context.Context) error{
		"Organization": func(ctx context.Context) error { _, err := c.Organization(ctx, integOrg); return err },
		"AddPeer": func(ctx context.Context) error {
			_, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: "integ-down", PublicKey: kp.Public})
			return err
		},
		"RemovePeer": func(ctx context.Context) error { return c.RemovePeer(ctx, org, "integ-down") },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := call(integCtx(t, integTimeout))
			if !flyapi.IsTransient(err) {
				t.Fatalf("%s with the server down = %s", name, integKinds(err))
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
			integNoSecret(t, srv, err)
		})
	}
}
