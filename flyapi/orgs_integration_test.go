package flyapi_test

// Integration tests for what one client per FlyOrg needs: O(1) Fly requests
// per peer whatever the org's size, typed not-found, networks, a token that
// rotates without a new client, and the glaceon_fly_api_* metrics. The real
// client against the real double over loopback HTTP.

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// TestIntegrationRequestsPerPeerIndependentOfOrgSize: a peer's whole life
// (add, remove, confirm) costs the same 3 Fly requests in an empty org and in
// an org of 2,000 peers, counted at the double, and never lists the org.
func TestIntegrationRequestsPerPeerIndependentOfOrgSize(t *testing.T) {
	perSize := map[int]map[flyapitest.RequestKey]int{}
	for _, size := range []int{0, 2000} {
		srv := integServer(t, flyapitest.Options{})
		if _, err := srv.SeedPeers(integOrg, "seed-", size); err != nil {
			t.Fatal(err)
		}
		c := integClient(t, srv)
		ctx := integCtx(t, integTimeout)
		org, err := c.CachedOrganization(ctx, integOrg) // warms the cache: once per FlyOrg, not per pod
		if err != nil {
			t.Fatal(err)
		}
		srv.ResetRequestCounts()
		const pods = 5
		for i := 0; i < pods; i++ {
			kp := integKey(t)
			name := "k8s-pod-" + string(rune('a'+i))
			if _, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: flyapi.Organization{Slug: integOrg}, Name: name, PublicKey: kp.Public}); err != nil {
				t.Fatalf("size %d: AddPeer: %v", size, err)
			}
			if err := c.RemovePeer(ctx, *org, name); err != nil {
				t.Fatalf("size %d: RemovePeer: %v", size, err)
			}
			integNoPeer(t, srv, integOrg, name)
		}
		if got := srv.OrgRequests(integOrg); got != 3*pods {
			t.Errorf("org of %d peers: %d Fly requests for %d pods, want %d (3 each): %v", size, got, pods, 3*pods, srv.RequestCounts())
		}
		if n := srv.OpRequests("organization.wireGuardPeers"); n != 0 {
			t.Errorf("org of %d peers: %d list pages, want none", size, n)
		}
		if len(srv.Peers(integOrg)) != size {
			t.Errorf("seeded peers touched: %d left of %d", len(srv.Peers(integOrg)), size)
		}
		perSize[size] = srv.RequestCounts()
	}
	want := map[flyapitest.RequestKey]int{
		{Op: "addWireGuardPeer", Org: integOrg}:           5,
		{Op: "removeWireGuardPeer", Org: integOrg}:        5,
		{Op: "organization.wireGuardPeer", Org: integOrg}: 5,
	}
	for size, got := range perSize {
		if len(got) != len(want) {
			t.Errorf("size %d: counts %v, want %v", size, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("size %d: %+v = %d, want %d", size, k, got[k], v)
			}
		}
	}
}

func TestIntegrationPeerLookup(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	c := integClient(t, srv)
	ctx := integCtx(t, integTimeout)
	kp := integKey(t)
	want, err := srv.AddPeer(integOrg, "integ-look", kp.Public.String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Peer(ctx, integOrg, "integ-look")
	if err != nil || p.ID != want.ID || p.PublicKey != want.PublicKey || p.PeerIP != want.PeerIP.String() || p.Region != want.Region {
		t.Fatalf("Peer = %+v, %v; want %+v", p, err, want)
	}
	if _, err := c.Peer(ctx, integOrg, "integ-nope"); !flyapi.IsPeerNotFound(err) || flyapi.IsOrgNotFound(err) {
		t.Errorf("missing peer = %s", integKinds(err))
	}
	if _, err := c.Peer(ctx, "nope-org", "integ-look"); !flyapi.IsOrgNotFound(err) || flyapi.IsPeerNotFound(err) || !strings.Contains(err.Error(), "nope-org") {
		t.Errorf("missing org = %s", integKinds(err))
	}
	// The peer of one org is not found through another.
	if _, err := c.Peer(ctx, integPersonal, "integ-look"); !flyapi.IsPeerNotFound(err) {
		t.Errorf("other org = %s", integKinds(err))
	}
}

// TestIntegrationRemoveInUnknownOrg: an org the API cannot find is an error,
// never "already removed", and the peer stays.
func TestIntegrationRemoveInUnknownOrg(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	c := integClient(t, srv)
	ctx := integCtx(t, integTimeout)
	kp := integKey(t)
	if _, err := srv.AddPeer(integOrg, "integ-stay", kp.Public.String()); err != nil {
		t.Fatal(err)
	}
	for _, org := range []flyapi.Organization{
		{ID: "T3JnYW5pemF0aW9uLzk5OTk5", Slug: integOrg},
		{ID: "T3JnYW5pemF0aW9uLzk5OTk5"},
		{Slug: "nope-org"},
	} {
		err := c.RemovePeer(ctx, org, "integ-stay")
		if !flyapi.IsOrgNotFound(err) || flyapi.IsPeerNotFound(err) {
			t.Errorf("RemovePeer(%+v) = %s, want an org-not-found error", org, integKinds(err))
		}
	}
	integOnePeer(t, srv, integOrg, "integ-stay", kp.Public)
}

func TestIntegrationNetworks(t *testing.T) {
	srv := integServer(t, flyapitest.Options{Orgs: []flyapitest.Org{{Slug: integOrg, Networks: []string{"blue"}}}})
	c := integClient(t, srv)
	ctx := integCtx(t, integTimeout)
	org := integOrgOf(t, srv, integOrg)
	for _, tc := range []struct{ network, stored string }{{"", ""}, {"default", ""}, {"blue", "blue"}} {
		kp := integKey(t)
		name := "integ-net-" + tc.network
		if tc.network == "" {
			name = "integ-net-none"
		}
		cp, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: name, PublicKey: kp.Public, Network: tc.network})
		if err != nil {
			t.Fatalf("network %q: %v", tc.network, err)
		}
		got := integOnePeer(t, srv, integOrg, name, kp.Public)
		inDefault := srv.OrgPrefix(integOrg).Contains(cp.PeerIP)
		if got.Network != tc.stored || cp.Network != tc.stored || inDefault != (tc.stored == "") {
			t.Errorf("network %q: stored %q, returned %q, address %s (in default /48: %v)", tc.network, got.Network, cp.Network, cp.PeerIP, inDefault)
		}
		p, err := c.Peer(ctx, integOrg, name)
		if err != nil || p.Network != tc.stored {
			t.Errorf("network %q: lookup %+v, %v", tc.network, p, err)
		}
	}
	_, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: "integ-net-red", PublicKey: integKey(t).Public, Network: "red"})
	if !flyapi.IsNotFound(err) || !strings.Contains(err.Error(), "Network") {
		t.Errorf("unknown network = %s", integKinds(err))
	}
}

func TestIntegrationDuplicateNameReplace(t *testing.T) {
	srv := integServer(t, flyapitest.Options{DuplicateName: flyapitest.DuplicateNameReplace})
	c := integClient(t, srv)
	ctx := integCtx(t, integTimeout)
	org := integOrgOf(t, srv, integOrg)
	first, second := integKey(t), integKey(t)
	for _, kp := range []wgquick.KeyPair{first, second} {
		if _, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: "integ-dup", PublicKey: kp.Public}); err != nil {
			t.Fatalf("AddPeer: %v", err)
		}
	}
	integOnePeer(t, srv, integOrg, "integ-dup", second.Public)
}

// TestIntegrationTokenRotation: one client follows its TokenHolder: a new
// token is used at once, a bad one is rejected the way the real API does
// (HTTP 200, UNAUTHORIZED) and empties the org cache, an empty holder sends
// nothing.
func TestIntegrationTokenRotation(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	var holder flyapi.TokenHolder
	c := integClient(t, srv, func(o *flyapi.Options) { o.Token, o.Tokens = "", &holder })
	ctx := integCtx(t, integTimeout)

	var err error
	if n := integDelta(srv, func() { _, err = c.Organization(ctx, integOrg) }); !flyapi.IsUnauthorized(err) || n != 0 {
		t.Fatalf("empty holder: %s after %d requests, want unauthorized after 0", integKinds(err), n)
	}
	const src = "secret glaceon-system/fly-api-token key token"
	if err := holder.Set(srv.Token(), src); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CachedOrganization(ctx, integOrg); err != nil {
		t.Fatalf("after Set: %v", err)
	}
	if n := integDelta(srv, func() { _, err = c.CachedOrganization(ctx, integOrg) }); err != nil || n != 0 {
		t.Fatalf("cached lookup: %v after %d requests", err, n)
	}
	wrong := "FlyV1 fm2_rotatedAwayAAAAAAAAAAAAAAAAAAAAAAAA"
	if err := holder.Set(wrong, src); err != nil {
		t.Fatal(err)
	}
	n := integDelta(srv, func() { _, err = c.CachedOrganization(ctx, integOrg) })
	var e *flyapi.Error
	if !flyapi.IsUnauthorized(err) || n != 1 || !strings.Contains(err.Error(), src) || !errors.As(err, &e) || e.HTTPStatus != 200 || e.Code != "UNAUTHORIZED" {
		t.Fatalf("revoked token: %s after %d requests (cache must be empty after a token change)", integKinds(err), n)
	}
	integNoSecret(t, srv, err, wrong)
	if err := holder.Set("Bearer", src); err == nil {
		t.Error("holder accepted an empty token")
	}
	if err := holder.Set(srv.UserToken(), src); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Organization(ctx, integOrg); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

// TestIntegrationMetrics: requests by org, op and result; calls' latency and
// errors by kind.
func TestIntegrationMetrics(t *testing.T) {
	srv := integServer(t, flyapitest.Options{})
	m := flyapi.NewMetrics()
	reg := prometheus.NewRegistry()
	if err := flyapi.RegisterMetrics(reg, m); err != nil {
		t.Fatal(err)
	}
	if err := flyapi.RegisterMetrics(reg, m); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	c := integClient(t, srv, func(o *flyapi.Options) { o.Metrics, o.Org = m, "acme-org" })
	ctx := integCtx(t, integTimeout)
	org := integOrgOf(t, srv, integOrg)
	kp := integKey(t)
	srv.Faults().Set(flyapitest.Fault{Op: "addWireGuardPeer", Kind: flyapitest.Fault429, Times: 1, RetryAfter: 1})
	if _, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: org, Name: "integ-m", PublicKey: kp.Public}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Peer(ctx, integOrg, "integ-missing"); !flyapi.IsPeerNotFound(err) {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, fam := range families {
		for _, mt := range fam.GetMetric() {
			key := fam.GetName() + labelString(mt.GetLabel())
			switch {
			case mt.Counter != nil:
				got[key] = mt.Counter.GetValue()
			case mt.Histogram != nil:
				got[key] = float64(mt.Histogram.GetSampleCount())
			}
		}
	}
	for k, v := range map[string]float64{
		`glaceon_fly_api_requests_total{org=acme-org,op=addWireGuardPeer,result=rate_limited}`: 1,
		`glaceon_fly_api_requests_total{org=acme-org,op=addWireGuardPeer,result=ok}`:           1,
		`glaceon_fly_api_requests_total{org=acme-org,op=wireGuardPeer,result=not_found}`:       1,
		`glaceon_fly_api_duration_seconds{org=acme-org,op=addWireGuardPeer}`:                   1,
		`glaceon_fly_api_duration_seconds{org=acme-org,op=wireGuardPeer}`:                      1,
		`glaceon_fly_api_errors_total{org=acme-org,op=wireGuardPeer,kind=not_found}`:           1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != 6 {
		t.Errorf("series: %v", got)
	}
}

func labelString(ls []*dto.LabelPair) string {
	order := map[string]int{"org": 0, "op": 1, "result": 2, "kind": 2}
	parts := make([]string, 3)
	n := 0
	for _, l := range ls {
		parts[order[l.GetName()]] = l.GetName() + "=" + l.GetValue()
		n++
	}
	return "{" + strings.Join(parts[:n], ",") + "}"
}
