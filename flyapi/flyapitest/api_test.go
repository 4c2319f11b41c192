package flyapitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
)

type gqlResult struct {
	Status     int
	Header     http.Header
	Body       []byte
	Data       map[string]any
	DataIsNull bool
	Errors     []struct {
		Message    string         `json:"message"`
		Path       []any          `json:"path"`
		Extensions map[string]any `json:"extensions"`
	}
}

func (r *gqlResult) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

var testClient = &http.Client{Timeout: 20 * time.Second}

// gql posts a GraphQL request the way fly-go does (compact whitespace is the
// caller's business) with the given Authorization header value.
func gql(t testing.TB, s *Server, auth, query string, vars map[string]any) *gqlResult {
	t.Helper()
	r, err := gqlErr(s, auth, query, vars)
	if err != nil {
		t.Fatalf("POST /graphql: %v", err)
	}
	return r
}

func gqlErr(s *Server, auth, query string, vars map[string]any) (*gqlResult, error) {
	var v any
	if vars != nil {
		v = vars
	}
	body, _ := json.Marshal(map[string]any{"query": query, "variables": v})
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Accept", "application/json; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	res := &gqlResult{Status: resp.StatusCode, Header: resp.Header}
	res.Body, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var env struct {
			Data   json.RawMessage `json:"data"`
			Errors json.RawMessage `json:"errors"`
		}
		if err := json.Unmarshal(res.Body, &env); err != nil {
			return nil, fmt.Errorf("bad JSON %q: %v", res.Body, err)
		}
		if string(env.Data) == "null" {
			res.DataIsNull = true
		} else if len(env.Data) > 0 {
			if err := json.Unmarshal(env.Data, &res.Data); err != nil {
				return nil, err
			}
		}
		if len(env.Errors) > 0 {
			if err := json.Unmarshal(env.Errors, &res.Errors); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

func mustOK(t testing.TB, r *gqlResult) map[string]any {
	t.Helper()
	if r.Status != 200 || len(r.Errors) > 0 {
		t.Fatalf("want success, got HTTP %d %s", r.Status, r.Body)
	}
	return r.Data
}

func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func newKey(t testing.TB) (priv, pub []byte) {
	t.Helper()
	priv = make([]byte, 32)
	if _, err := rand.Read(priv); err != nil {
		t.Fatal(err)
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

const (
	qOrg     = `query($slug: String!) { organization(slug: $slug) { id internalNumericId slug rawSlug name type billable } }`
	qAdd     = `mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip endpointip pubkey } }`
	qRemove  = `mutation($input: RemoveWireGuardPeerInput!) { removeWireGuardPeer(input: $input) { organization { id } } }`
	qList    = `query($slug: String!) { organization(slug: $slug) { wireGuardPeers { nodes { id name pubkey region peerip } } } }`
	qPage    = `query($slug: String!, $first: Int, $after: String) { organization(slug: $slug) { wireGuardPeers(first: $first, after: $after) { totalCount nodes { name peerip } pageInfo { hasNextPage endCursor } } } }`
	qGetPeer = `query($slug: String!, $name: String!) { organization(slug: $slug) { wireGuardPeer(name: $name) { id name pubkey region peerip } } }`
	qVal     = `mutation($input: ValidateWireGuardPeersInput!) { validateWireGuardPeers(input: $input) { invalidPeerIps validPeerIps } }`
)

func addPeer(t testing.TB, s *Server, org, name string, pub []byte) map[string]any {
	t.Helper()
	r := gql(t, s, s.Token(), qAdd, map[string]any{"input": map[string]any{
		"organizationId": s.OrgID(org), "name": name, "pubkey": b64(pub), "region": "yyz", "nats": false,
	}})
	return mustOK(t, r)["addWireGuardPeer"].(map[string]any)
}

func TestOrganizationLookup(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	r := gql(t, s, s.Token(), qOrg, map[string]any{"slug": "personal"})
	org := mustOK(t, r)["organization"].(map[string]any)
	if org["id"] == "personal" || org["id"] != s.OrgID("personal") {
		t.Errorf("id %v should be opaque node ID %q", org["id"], s.OrgID("personal"))
	}
	if org["slug"] != "personal" || org["rawSlug"] != "glaceon-test-123" || org["type"] != "PERSONAL" || org["billable"] != true {
		t.Errorf("org = %v", org)
	}
	// by raw slug
	r = gql(t, s, s.Token(), qOrg, map[string]any{"slug": "glaceon-test-123"})
	if get(mustOK(t, r), "organization", "id") != s.OrgID("personal") {
		t.Errorf("raw slug lookup: %s", r.Body)
	}
	// unknown: null, no error
	r = gql(t, s, s.Token(), qOrg, map[string]any{"slug": "nope"})
	d := mustOK(t, r)
	if v, ok := d["organization"]; !ok || v != nil {
		t.Errorf("unknown org: %s", r.Body)
	}
	// inline literal arguments, alias, fragment, odd whitespace and comments
	q := "query   Q {\n # comment\n\t o1 : organization ( slug : \"acme\" ) { ...F __typename }\n}\nfragment F on Organization { id slug }"
	r = gql(t, s, s.Token(), q, nil)
	d = mustOK(t, r)
	if get(d, "o1", "slug") != "acme" || get(d, "o1", "__typename") != "Organization" || get(d, "o1", "id") != s.OrgID("acme") {
		t.Errorf("inline query: %s", r.Body)
	}
	if strings.Contains(string(r.Body), "rawSlug") {
		t.Errorf("unselected field returned: %s", r.Body)
	}
	// organizations list
	r = gql(t, s, s.Token(), `query($admin: Boolean!) { organizations(admin: $admin) { nodes { id slug rawSlug name type paidPlan billable viewerRole internalNumericId } } }`, map[string]any{"admin": false})
	if n, _ := get(mustOK(t, r), "organizations", "nodes").([]any); len(n) != 2 {
		t.Errorf("organizations: %s", r.Body)
	}
	// unknown field
	r = gql(t, s, s.Token(), `{ organization(slug:"acme") { id bogus } }`, nil)
	if r.Status != 200 || len(r.Errors) != 1 || !r.DataIsNull || !strings.Contains(r.Errors[0].Message, "bogus") {
		t.Errorf("unknown field: %s", r.Body)
	}
	// parse error
	r = gql(t, s, s.Token(), `query { organization(slug: "acme") { id }`, nil)
	if r.Status != 200 || len(r.Errors) != 1 {
		t.Errorf("parse error: %s", r.Body)
	}
}

func TestRegions(t *testing.T) {
	s := Start(t, Options{NoGateway: true, Region: "ord"})
	r := gql(t, s, s.Token(), `query { nearestRegion(wireguardGateway: true) { code name gatewayAvailable deprecated } }`, nil)
	if get(mustOK(t, r), "nearestRegion", "code") != "ord" || get(r.Data, "nearestRegion", "gatewayAvailable") != true {
		t.Errorf("nearestRegion: %s", r.Body)
	}
	r = gql(t, s, s.Token(), `query { platform { requestRegion regions { name code latitude longitude gatewayAvailable requiresPaidPlan deprecated } } }`, nil)
	regs, _ := get(mustOK(t, r), "platform", "regions").([]any)
	var gw, nogw int
	for _, x := range regs {
		if get(x, "gatewayAvailable") == true {
			gw++
		} else {
			nogw++
		}
	}
	if gw < 3 || nogw < 1 || get(r.Data, "platform", "requestRegion") != "ord" {
		t.Errorf("platform: %s", r.Body)
	}
}

func TestAuth(t *testing.T) {
	s := Start(t, Options{NoGateway: true, AddOnlyToken: "FlyV1 fm2_addonly"})
	tok := s.Token()
	if !strings.HasPrefix(tok, "FlyV1 fm2_") || !strings.Contains(tok, ",fm2_") {
		t.Fatalf("token not macaroon-shaped: %.20s…", tok)
	}
	bare := strings.TrimPrefix(tok, "FlyV1 ")
	ok := []string{tok, "Bearer " + bare, "flyv1 " + bare, "Bearer FlyV1 " + bare, "FlyV1 " + strings.ReplaceAll(bare, ",", " , "),
		"Bearer " + s.UserToken(), "FlyV1 " + bare + "," + s.UserToken()}
	for _, h := range ok {
		r := gql(t, s, h, qOrg, map[string]any{"slug": "acme"})
		if r.Status != 200 || len(r.Errors) != 0 {
			t.Errorf("auth %.12s…: HTTP %d %s", h, r.Status, r.Body)
		}
	}
	bad := []string{"", bare, "FlyV1 fm2_nope", "Bearer " + strings.Split(bare, ",")[0], "Bearer fo1_nope", "Basic " + bare}
	// By default a bad token is answered like the real API: HTTP 200,
	// data null, UNAUTHORIZED with graphql-ruby's wording.
	for _, h := range bad {
		r := gql(t, s, h, qOrg, map[string]any{"slug": "acme"})
		if r.Status != 200 || r.code() != "UNAUTHORIZED" || !r.DataIsNull || r.Errors[0].Message != "You must be authenticated to view this." {
			t.Errorf("bad auth %.12q: HTTP %d %s", h, r.Status, r.Body)
		}
	}
	// add-only token: may add, may not remove
	_, pub := newKey(t)
	r := gql(t, s, "FlyV1 fm2_addonly", qAdd, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "p1", "pubkey": b64(pub)}})
	mustOK(t, r)
	r = gql(t, s, "FlyV1 fm2_addonly", qRemove, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "p1"}})
	if r.code() != "UNAUTHORIZED" || s.PeerCount() != 1 {
		t.Errorf("add-only remove: %s", r.Body)
	}

	s2 := Start(t, Options{NoGateway: true, UnauthorizedHTTP401: true})
	for _, h := range bad {
		r = gql(t, s2, h, qOrg, map[string]any{"slug": "acme"})
		if r.Status != 401 || r.code() != "UNAUTHORIZED" {
			t.Errorf("HTTP 401 mode, bad auth %.12q: HTTP %d %s", h, r.Status, r.Body)
		}
	}
}

func TestAddListRemove(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	_, pub := newKey(t)
	add := addPeer(t, s, "personal", "k8s-default-web-abc12", pub)
	ip, err := netip.ParseAddr(add["peerip"].(string))
	if err != nil || !s.OrgPrefix("personal").Contains(ip) {
		t.Fatalf("peerip %v not in %v", add["peerip"], s.OrgPrefix("personal"))
	}
	if add["endpointip"] != "localhost" {
		t.Errorf("endpointip = %v, want a host name", add["endpointip"])
	}
	if k, _ := base64.StdEncoding.DecodeString(add["pubkey"].(string)); len(k) != 32 || add["pubkey"] == b64(pub) {
		t.Errorf("gateway pubkey = %v", add["pubkey"])
	}
	if ip.As16()[15] != 2 || !strings.Contains(ip.String(), ":a7b:") {
		t.Errorf("peerip shape %v", ip)
	}
	ps := s.Peers("personal")
	if len(ps) != 1 || ps[0].Name != "k8s-default-web-abc12" || ps[0].PeerIP != ip || ps[0].PublicKey != b64(pub) || ps[0].Region != "yyz" || ps[0].Created.IsZero() {
		t.Fatalf("Peers = %+v", ps)
	}

	// duplicate name
	_, pub2 := newKey(t)
	r := gql(t, s, s.Token(), qAdd, map[string]any{"input": map[string]any{"organizationId": s.OrgID("personal"), "name": "k8s-default-web-abc12", "pubkey": b64(pub2)}})
	if r.Status != 200 || r.code() != "UNPROCESSABLE" || !strings.Contains(r.Errors[0].Message, "taken") || get(r.Errors[0].Path, 0) != "addWireGuardPeer" {
		t.Errorf("duplicate: %s", r.Body)
	}
	// same name in another org is fine
	addPeer(t, s, "acme", "k8s-default-web-abc12", pub2)
	// bad keys
	for _, k := range []string{b64(make([]byte, 33)), "not base64!", ""} {
		r = gql(t, s, s.Token(), qAdd, map[string]any{"input": map[string]any{"organizationId": s.OrgID("personal"), "name": "other", "pubkey": k}})
		if len(r.Errors) == 0 || s.PeerCount() != 2 {
			t.Errorf("bad key %q accepted: %s", k, r.Body)
		}
	}
	// slug instead of node ID, bad name, bad region
	for _, in := range []map[string]any{
		{"organizationId": "personal", "name": "x1", "pubkey": b64(make([]byte, 32))},
		{"organizationId": s.OrgID("personal"), "name": "bad_name", "pubkey": b64(make([]byte, 32))},
		{"organizationId": s.OrgID("personal"), "name": "x2", "pubkey": b64(make([]byte, 32)), "region": "gru"},
	} {
		r = gql(t, s, s.Token(), qAdd, map[string]any{"input": in})
		if len(r.Errors) == 0 {
			t.Errorf("input %v accepted", in)
		}
	}

	// get by name
	r = gql(t, s, s.Token(), qGetPeer, map[string]any{"slug": "personal", "name": "k8s-default-web-abc12"})
	if get(mustOK(t, r), "organization", "wireGuardPeer", "peerip") != ip.String() {
		t.Errorf("get peer: %s", r.Body)
	}
	r = gql(t, s, s.Token(), qGetPeer, map[string]any{"slug": "personal", "name": "nope"})
	if r.code() != "NOT_FOUND" {
		t.Errorf("get missing peer: %s", r.Body)
	}

	// validate
	r = gql(t, s, s.Token(), qVal, map[string]any{"input": map[string]any{"peerIps": []any{ip.String(), "fdaa:0:18:a7b:d6b:0:a:ff02", "garbage"}}})
	d := mustOK(t, r)
	if fmt.Sprint(get(d, "validateWireGuardPeers", "validPeerIps")) != fmt.Sprint([]any{ip.String()}) ||
		len(get(d, "validateWireGuardPeers", "invalidPeerIps").([]any)) != 2 {
		t.Errorf("validate: %s", r.Body)
	}

	// remove
	r = gql(t, s, s.Token(), qRemove, map[string]any{"input": map[string]any{"organizationId": s.OrgID("personal"), "name": "k8s-default-web-abc12"}})
	if get(mustOK(t, r), "removeWireGuardPeer", "organization", "id") != s.OrgID("personal") {
		t.Errorf("remove: %s", r.Body)
	}
	if len(s.Peers("personal")) != 0 || len(s.Peers("acme")) != 1 || s.PeerCount() != 1 {
		t.Errorf("after remove: %+v", s.Peers(""))
	}
	r = gql(t, s, s.Token(), qRemove, map[string]any{"input": map[string]any{"organizationId": s.OrgID("personal"), "name": "k8s-default-web-abc12"}})
	if r.code() != "NOT_FOUND" || r.Errors[0].Message != "Could not find WireGuardPeer" {
		t.Errorf("remove unknown: %s", r.Body)
	}
	// the removed IP is now invalid, and not reused
	r = gql(t, s, s.Token(), qVal, map[string]any{"input": map[string]any{"peerIps": []any{ip.String()}}})
	if len(get(mustOK(t, r), "validateWireGuardPeers", "invalidPeerIps").([]any)) != 1 {
		t.Errorf("validate removed: %s", r.Body)
	}
	_, pub3 := newKey(t)
	if add := addPeer(t, s, "personal", "again", pub3); add["peerip"] == ip.String() {
		t.Errorf("peer IP reused")
	}
}

func TestPagination(t *testing.T) {
	s := Start(t, Options{NoGateway: true}) // default page size 2
	const n = 7
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		_, pub := newKey(t)
		name := fmt.Sprintf("peer-%d", i)
		addPeer(t, s, "acme", name, pub)
		want[name] = true
	}
	// fly-go's document: no first/after → only the first page.
	r := gql(t, s, s.Token(), qList, map[string]any{"slug": "acme"})
	if nodes, _ := get(mustOK(t, r), "organization", "wireGuardPeers", "nodes").([]any); len(nodes) != 2 {
		t.Errorf("default page: %d nodes, want 2", len(nodes))
	}
	for _, first := range []any{nil, 3, 100} {
		got := map[string]bool{}
		var after any
		for pages := 0; ; pages++ {
			if pages > n+1 {
				t.Fatalf("first=%v: too many pages", first)
			}
			vars := map[string]any{"slug": "acme", "after": after}
			if first != nil {
				vars["first"] = first
			}
			r := gql(t, s, s.Token(), qPage, vars)
			c := get(mustOK(t, r), "organization", "wireGuardPeers")
			if get(c, "totalCount") != float64(n) {
				t.Errorf("totalCount %v", get(c, "totalCount"))
			}
			for _, node := range get(c, "nodes").([]any) {
				name := get(node, "name").(string)
				if got[name] {
					t.Errorf("first=%v: %s twice", first, name)
				}
				got[name] = true
			}
			if get(c, "pageInfo", "hasNextPage") != true {
				break
			}
			after = get(c, "pageInfo", "endCursor")
		}
		if len(got) != n {
			t.Errorf("first=%v: got %d peers, want %d", first, len(got), n)
		}
	}
	// deleting the cursor's peer between pages does not break paging
	r = gql(t, s, s.Token(), qPage, map[string]any{"slug": "acme", "first": 2})
	cur := get(mustOK(t, r), "organization", "wireGuardPeers", "pageInfo", "endCursor")
	if err := s.RemovePeer("acme", "peer-1"); err != nil {
		t.Fatal(err)
	}
	r = gql(t, s, s.Token(), qPage, map[string]any{"slug": "acme", "first": 2, "after": cur})
	if get(mustOK(t, r), "organization", "wireGuardPeers", "nodes", 0, "name") != "peer-2" {
		t.Errorf("after deleted cursor: %s", r.Body)
	}
	// edges, inline first literal, bad cursor
	r = gql(t, s, s.Token(), `{ organization(slug: "acme") { wireGuardPeers(first: 1) { edges { cursor node { name } } pageInfo { hasPreviousPage startCursor } } } }`, nil)
	if get(mustOK(t, r), "organization", "wireGuardPeers", "edges", 0, "node", "name") != "peer-0" {
		t.Errorf("edges: %s", r.Body)
	}
	r = gql(t, s, s.Token(), qPage, map[string]any{"slug": "acme", "first": 2, "after": "junk"})
	if len(r.Errors) == 0 {
		t.Errorf("bad cursor accepted: %s", r.Body)
	}
}

func TestConcurrentAdds(t *testing.T) {
	s := Start(t, Options{})
	const n = 50
	var wg sync.WaitGroup
	ips := make([]string, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, pub := newKey(t)
			r, err := gqlErr(s, s.Token(), qAdd, map[string]any{"input": map[string]any{
				"organizationId": s.OrgID("personal"), "name": fmt.Sprintf("c-%d", i), "pubkey": b64(pub)}})
			if err != nil {
				errs <- err
				return
			}
			if r.Status != 200 || len(r.Errors) > 0 {
				errs <- fmt.Errorf("add %d: %s", i, r.Body)
				return
			}
			ips[i], _ = get(r.Data, "addWireGuardPeer", "peerip").(string)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil || !s.OrgPrefix("personal").Contains(a) {
			t.Errorf("bad ip %q", ip)
		}
		p120 := netip.PrefixFrom(a, 120).Masked()
		if seen[p120.String()] {
			t.Errorf("duplicate /120 %s", p120)
		}
		seen[p120.String()] = true
	}
	if s.PeerCount() != n || s.Requests() != n {
		t.Errorf("PeerCount %d Requests %d, want %d", s.PeerCount(), s.Requests(), n)
	}
	if cfg := s.gw.peerCount(); cfg != n {
		t.Errorf("gateway has %d peers, want %d", cfg, n)
	}
}

func TestFaults(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	org := s.OrgID("acme")
	addVars := func(name string) map[string]any {
		_, pub := newKey(t)
		return map[string]any{"input": map[string]any{"organizationId": org, "name": name, "pubkey": b64(pub)}}
	}

	s.Faults().Set(Fault{Op: "addWireGuardPeer", Kind: Fault502, Times: 2})
	// other ops unaffected
	mustOK(t, gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}))
	for i := 0; i < 2; i++ {
		if r := gql(t, s, s.Token(), qAdd, addVars("f502")); r.Status != 502 {
			t.Errorf("502 #%d: %d", i, r.Status)
		}
	}
	if s.PeerCount() != 0 {
		t.Errorf("502 applied the mutation")
	}
	mustOK(t, gql(t, s, s.Token(), qAdd, addVars("f502")))
	if s.Faults().Fired() != 2 || s.Faults().Pending() != 0 {
		t.Errorf("fired %d pending %d", s.Faults().Fired(), s.Faults().Pending())
	}

	s.Faults().Set(Fault{Kind: Fault503, Times: 1})
	if r := gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}); r.Status != 503 {
		t.Errorf("503: %d", r.Status)
	}

	s.Faults().Set(Fault{Kind: Fault429, RetryAfter: 1500 * time.Millisecond, Times: 1})
	if r := gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}); r.Status != 429 || r.Header.Get("Retry-After") != "2" {
		t.Errorf("429: %d Retry-After %q", r.Status, r.Header.Get("Retry-After"))
	}

	s.Faults().Set(Fault{Kind: FaultHTTP401, Times: 1})
	if r := gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}); r.Status != 401 {
		t.Errorf("401: %d", r.Status)
	}

	s.Faults().Set(Fault{Op: "organization", Kind: FaultUnauthorizedCode, Times: 1})
	if r := gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}); r.Status != 200 || r.code() != "UNAUTHORIZED" || !r.DataIsNull || get(r.Errors[0].Path, 0) != "organization" {
		t.Errorf("UNAUTHORIZED code: %d %s", r.Status, r.Body)
	}

	s.Faults().Set(Fault{Kind: FaultServerErrorCode, Times: 1})
	if r := gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}); r.code() != "SERVER_ERROR" {
		t.Errorf("SERVER_ERROR: %s", r.Body)
	}

	// ambiguous: applied, then 502; a retry sees the duplicate name
	s.Faults().Set(Fault{Op: "addWireGuardPeer", Kind: FaultApplyThen502, Times: 1})
	v := addVars("ambiguous")
	if r := gql(t, s, s.Token(), qAdd, v); r.Status != 502 {
		t.Errorf("apply-then-502: %d", r.Status)
	}
	if len(s.Peers("acme")) != 2 {
		t.Errorf("apply-then-502 did not apply: %+v", s.Peers("acme"))
	}
	if r := gql(t, s, s.Token(), qAdd, v); r.code() != "UNPROCESSABLE" {
		t.Errorf("retry after ambiguous: %s", r.Body)
	}

	// slow: the client deadline fires first, the op still runs later
	s.Faults().Set(Fault{Op: "organization", Kind: FaultSlow, Delay: 300 * time.Millisecond, Times: 1})
	start := time.Now()
	mustOK(t, gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}))
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("slow fault took only %v", el)
	}
	s.Faults().Set(Fault{Kind: FaultSlow, Delay: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	body, _ := json.Marshal(map[string]any{"query": qOrg, "variables": map[string]any{"slug": "acme"}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/graphql", bytes.NewReader(body))
	req.Header.Set("Authorization", s.Token())
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("slow fault answered in time")
	}
	cancel()

	s.Faults().Set(Fault{Kind: FaultDropConnection, Times: 1})
	if _, err := gqlErr(s, s.Token(), qOrg, map[string]any{"slug": "acme"}); err == nil {
		t.Errorf("dropped connection gave an answer")
	}

	s.Faults().Clear()
	before := s.Requests()
	mustOK(t, gql(t, s, s.Token(), qOrg, map[string]any{"slug": "acme"}))
	if s.Requests() != before+1 {
		t.Errorf("Requests did not count")
	}
}

func TestHTTPErrors(t *testing.T) {
	s := Start(t, Options{NoGateway: true})
	resp, err := http.Get(s.URL() + "/graphql")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", s.URL()+"/graphql", strings.NewReader("{not json"))
	req.Header.Set("Authorization", s.Token())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("bad JSON: %d", resp.StatusCode)
	}
	// exact body shape fly-go sends with no variables
	req, _ = http.NewRequest("POST", s.URL()+"/graphql", strings.NewReader(`{"query":"query { nearestRegion(wireguardGateway: true) { code } }","variables":null}`+"\n"))
	req.Header.Set("Authorization", s.Token())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != `{"data":{"nearestRegion":{"code":"yyz"}}}`+"\n" {
		t.Errorf("envelope: %d %s", resp.StatusCode, b)
	}
}

func TestNewServerValidation(t *testing.T) {
	if _, err := NewServer(Options{NoGateway: true, Orgs: []Org{{ID: "acme", Slug: "acme"}}}); err == nil {
		t.Error("slug as ID accepted")
	}
	if _, err := NewServer(Options{NoGateway: true, Listen: "0.0.0.0:0"}); err == nil {
		t.Error("non-loopback listen accepted")
	}
}
