package flyapitest

import (
	"fmt"
	"strings"
	"testing"
)

func TestRequestCounts(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	_, pub := newKey(t)
	addPeer(t, s, "acme", "k8s-a", pub)
	mustOK(t, gql(t, s, s.Token(), qGetPeer, map[string]any{"slug": "acme", "name": "k8s-a"}))
	mustOK(t, gql(t, s, s.Token(), qList, map[string]any{"slug": "acme"}))
	mustOK(t, gql(t, s, s.Token(), qOrg, map[string]any{"slug": "glaceon-test-123"})) // raw slug of personal
	mustOK(t, gql(t, s, s.Token(), `query { organization(slug: "acme") { id } }`, nil))
	mustOK(t, gql(t, s, s.Token(), `query { nearestRegion(wireguardGateway: true) { code } }`, nil))
	gql(t, s, "FlyV1 fm2_wrong", qRemove, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "k8s-a"}})
	gql(t, s, s.Token(), qOrg, map[string]any{"slug": "no-such-org"})
	s.Faults().Set(Fault{Op: "removeWireGuardPeer", Kind: Fault502, Times: 1})
	gql(t, s, s.Token(), qRemove, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "k8s-a"}})

	want := map[RequestKey]int{
		{Op: "addWireGuardPeer", Org: "acme"}:            1,
		{Op: "organization.wireGuardPeer", Org: "acme"}:  1,
		{Op: "organization.wireGuardPeers", Org: "acme"}: 1,
		{Op: "organization", Org: "personal"}:            1,
		{Op: "organization", Org: "acme"}:                1,
		{Op: "nearestRegion"}:                            1,
		{Op: "removeWireGuardPeer", Org: "acme"}:         2, // unauthorized and faulted both count
		{Op: "organization", Org: "no-such-org"}:         1,
	}
	got := s.RequestCounts()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RequestCounts =\n%v\nwant\n%v", got, want)
	}
	if n := s.OrgRequests("acme"); n != 6 {
		t.Errorf("OrgRequests(acme) = %d, want 6", n)
	}
	if n := s.OrgRequests("glaceon-test-123"); n != 1 {
		t.Errorf("OrgRequests(raw slug) = %d, want 1", n)
	}
	if n := s.OpRequests("removeWireGuardPeer"); n != 2 {
		t.Errorf("OpRequests(remove) = %d, want 2", n)
	}
	s.ResetRequestCounts()
	if len(s.RequestCounts()) != 0 || s.Requests() != 9 {
		t.Errorf("after reset: %v, Requests %d", s.RequestCounts(), s.Requests())
	}
}

func TestSeedPeers(t *testing.T) {
	s := Start(t, Options{})
	seeded, err := s.SeedPeers("acme", "seed-", 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(seeded) != 2000 || len(s.Peers("acme")) != 2000 || s.Requests() != 0 {
		t.Fatalf("seeded %d, double has %d, %d requests", len(seeded), len(s.Peers("acme")), s.Requests())
	}
	ips := map[string]bool{}
	for _, p := range seeded {
		if !s.OrgPrefix("acme").Contains(p.PeerIP) || ips[p.PeerIP.String()] {
			t.Fatalf("peer %s: address %s outside the org or repeated", p.Name, p.PeerIP)
		}
		ips[p.PeerIP.String()] = true
	}
	r := mustOK(t, gql(t, s, s.Token(), qGetPeer, map[string]any{"slug": "acme", "name": "seed-1999"}))
	if get(r, "organization", "wireGuardPeer", "name") != "seed-1999" {
		t.Errorf("lookup: %v", r)
	}
	if _, err := s.SeedPeers("acme", "seed-", 1); err == nil {
		t.Error("seeding a taken name succeeded")
	}
	if _, err := s.SeedPeers("nope", "x-", 1); err == nil {
		t.Error("seeding an unknown org succeeded")
	}
}

func TestPeerLookupNotFound(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	r := gql(t, s, s.Token(), qGetPeer, map[string]any{"slug": "acme", "name": "nope"})
	if r.code() != "NOT_FOUND" || r.Errors[0].Message != "Could not find WireGuardPeer" || fmt.Sprint(r.Errors[0].Path) != "[organization wireGuardPeer]" {
		t.Errorf("missing peer: %s", r.Body)
	}
	r = gql(t, s, s.Token(), qGetPeer, map[string]any{"slug": "no-such-org", "name": "nope"})
	if len(r.Errors) != 0 || get(r.Data, "organization") != nil {
		t.Errorf("missing org: %s", r.Body)
	}
}

func TestNetworks(t *testing.T) {
	s := Start(t, Options{NoGateway: true, Orgs: []Org{{Slug: "acme", Networks: []string{"blue", "Green-2"}}}})
	add := func(name, network string) *gqlResult {
		_, pub := newKey(t)
		in := map[string]any{"organizationId": s.OrgID("acme"), "name": name, "pubkey": b64(pub)}
		if network != "" {
			in["network"] = network
		}
		return gql(t, s, s.Token(), `mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip network } }`, map[string]any{"input": in})
	}
	def := mustOK(t, add("p-default", ""))
	blue := mustOK(t, add("p-blue", "blue"))
	green := mustOK(t, add("p-green", "Green-2"))
	if get(def, "addWireGuardPeer", "network") != nil || get(blue, "addWireGuardPeer", "network") != "blue" {
		t.Errorf("network field: %v %v", def, blue)
	}
	prefix48 := func(r map[string]any) string {
		ip := get(r, "addWireGuardPeer", "peerip").(string)
		return strings.Join(strings.SplitN(ip, ":", 4)[:3], ":")
	}
	if p := prefix48(def); p == prefix48(blue) || prefix48(blue) == prefix48(green) {
		t.Errorf("networks share a /48: %v %v %v", def, blue, green)
	}
	for _, bad := range []string{"red", "default"} {
		if r := add("p-"+bad, bad); r.code() != "NOT_FOUND" || !strings.Contains(r.Errors[0].Message, "Network") {
			t.Errorf("network %q: %s", bad, r.Body)
		}
	}
	var nets []string
	for _, p := range s.Peers("acme") {
		nets = append(nets, p.Name+"="+p.Network)
	}
	if got := strings.Join(nets, " "); got != "p-default= p-blue=blue p-green=Green-2" {
		t.Errorf("peers: %s", got)
	}
	for _, bad := range [][]string{{"9lives"}, {"a b"}, {"x", "x"}} {
		if _, err := NewServer(Options{NoGateway: true, Orgs: []Org{{Slug: "o", Networks: bad}}}); err == nil {
			t.Errorf("networks %q accepted", bad)
		}
	}
}

func TestDuplicateNameModes(t *testing.T) {
	t.Run("reject (default)", func(t *testing.T) {
		s := Start(t, Options{NoGateway: true})
		_, pub := newKey(t)
		addPeer(t, s, "acme", "k8s-a", pub)
		_, pub2 := newKey(t)
		r := gql(t, s, s.Token(), qAdd, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "k8s-a", "pubkey": b64(pub2)}})
		if r.code() != "UNPROCESSABLE" || s.Peers("acme")[0].PublicKey != b64(pub) {
			t.Errorf("duplicate: %s", r.Body)
		}
	})
	t.Run("replace", func(t *testing.T) {
		s := Start(t, Options{DuplicateName: DuplicateNameReplace})
		_, pub := newKey(t)
		first := addPeer(t, s, "acme", "k8s-a", pub)
		_, pub2 := newKey(t)
		second := addPeer(t, s, "acme", "k8s-a", pub2)
		ps := s.Peers("acme")
		if len(ps) != 1 || ps[0].PublicKey != b64(pub2) || first["peerip"] == second["peerip"] || s.gw.peerCount() != 1 {
			t.Errorf("after replace: %+v (gateway has %d)", ps, s.gw.peerCount())
		}
		// A key another peer holds is still refused.
		addPeer(t, s, "acme", "k8s-b", pub)
		r := gql(t, s, s.Token(), qAdd, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "k8s-a", "pubkey": b64(pub)}})
		if r.code() != "UNPROCESSABLE" || len(s.Peers("acme")) != 2 {
			t.Errorf("replace with another peer's key: %s", r.Body)
		}
	})
	if _, err := NewServer(Options{NoGateway: true, DuplicateName: 7}); err == nil {
		t.Error("unknown mode accepted")
	}
}
