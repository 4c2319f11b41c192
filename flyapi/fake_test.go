package flyapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A small in-test fake of the Fly GraphQL API (the shared double in
// flyapitest is written separately; these tests must not depend on it).

const (
	testToken    = "FlyV1 fm2_c2VjcmV0LXBlcm1pc3Npb24=,fm2_ZGlzY2hhcmdlLXNlY3JldA=="
	testTokenHdr = "FlyV1 fm2_c2VjcmV0LXBlcm1pc3Npb24=,fm2_ZGlzY2hhcmdlLXNlY3JldA=="
	testGWKey    = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	testEndpoint = "ord1.gateway.6pn.dev"
)

// fault is one scripted answer that replaces the fake's normal handling.
type fault struct {
	status  int               // HTTP status (default 200)
	body    string            // raw body
	headers map[string]string // extra response headers
	apply   bool              // run the normal handler first (state changes), then answer with this fault
	hang    bool              // block until the request context is done
}

type gqlReq struct {
	Query     string         `json:"query"`
	Variables map[string]any `json:"variables"`
	raw       []byte
	header    http.Header
}

type fakeFly struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	orgs     map[string]Organization // by slug
	peers    []Peer
	pageSize int
	nextIP   int
	calls    map[string]int
	reqs     []gqlReq
	faults   map[string][]fault
	loop     bool // listPeers: always answer hasNextPage with the same cursor
	nilNodes bool // listPeers: put null nodes in pages
}

func newFakeFly(t *testing.T) *fakeFly {
	t.Helper()
	f := &fakeFly{
		t:        t,
		orgs:     map[string]Organization{"acme": {ID: "T3JnOjE=", Slug: "acme", RawSlug: "acme", Name: "Acme", Type: "SHARED"}},
		pageSize: 1000,
		calls:    map[string]int{},
		faults:   map[string][]fault{},
		nextIP:   1,
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFly) client(t *testing.T, mod ...func(*Options)) *Client {
	t.Helper()
	o := Options{
		BaseURL:        f.srv.URL,
		Token:          testToken,
		TokenSource:    "FLY_API_TOKEN",
		RetryBaseDelay: time.Millisecond,
		RetryMaxDelay:  5 * time.Millisecond,
	}
	for _, m := range mod {
		m(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func (f *fakeFly) inject(field string, fs ...fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[field] = append(f.faults[field], fs...)
}

func (f *fakeFly) count(field string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[field]
}

func (f *fakeFly) addPeerState(name, pubkey string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = append(f.peers, Peer{ID: "p" + strconv.Itoa(len(f.peers)+1), Name: name, PublicKey: pubkey, Region: "ord", PeerIP: f.allocIP()})
}

func (f *fakeFly) removeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = nil
}

func (f *fakeFly) peerNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.peers {
		out = append(out, p.Name)
	}
	return out
}

func (f *fakeFly) allocIP() string {
	ip := fmt.Sprintf("fdaa:0:18:a7b:d6b:0:a:%x02", f.nextIP)
	f.nextIP++
	return ip
}

// fieldOf returns the top-level field a document asks for.
func fieldOf(q string) string {
	switch {
	case strings.Contains(q, "wireGuardPeers"):
		return "listPeers"
	case strings.Contains(q, "wireGuardPeer("):
		return "getPeer"
	case strings.Contains(q, "addWireGuardPeer"):
		return "addWireGuardPeer"
	case strings.Contains(q, "removeWireGuardPeer"):
		return "removeWireGuardPeer"
	case strings.Contains(q, "validateWireGuardPeers"):
		return "validateWireGuardPeers"
	case strings.Contains(q, "nearestRegion"):
		return "nearestRegion"
	case strings.Contains(q, "organization("):
		return "organization"
	}
	return "unknown"
}

func (f *fakeFly) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/graphql" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var req gqlReq
	if err := json.Unmarshal(raw, &req); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	req.raw, req.header = raw, r.Header.Clone()
	field := fieldOf(req.Query)

	f.mu.Lock()
	f.calls[field]++
	f.reqs = append(f.reqs, req)
	var flt *fault
	if q := f.faults[field]; len(q) > 0 {
		flt = &q[0]
		f.faults[field] = q[1:]
	}
	f.mu.Unlock()

	if r.Header.Get("Authorization") != testTokenHdr {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if flt != nil && flt.hang {
		<-r.Context().Done()
		return
	}
	if flt != nil && !flt.apply {
		writeFault(w, flt)
		return
	}
	status, body := f.handle(field, req.Variables)
	if flt != nil {
		writeFault(w, flt)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeFault(w http.ResponseWriter, flt *fault) {
	for k, v := range flt.headers {
		w.Header().Set(k, v)
	}
	st := flt.status
	if st == 0 {
		st = 200
	}
	w.WriteHeader(st)
	_, _ = io.WriteString(w, flt.body)
}

func gqlErrBody(msg, code string) map[string]any {
	e := map[string]any{"message": msg, "path": []any{"x"}}
	if code != "" {
		e["extensions"] = map[string]any{"code": code}
	}
	return map[string]any{"data": nil, "errors": []any{e}}
}

func (f *fakeFly) handle(field string, vars map[string]any) (int, any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data := func(v any) (int, any) { return 200, map[string]any{"data": map[string]any{field: v}} }
	input, _ := vars["input"].(map[string]any)
	switch field {
	case "organization":
		slug, _ := vars["slug"].(string)
		o, ok := f.orgs[slug]
		if !ok {
			return data(nil)
		}
		return data(map[string]any{"id": o.ID, "slug": o.Slug, "rawSlug": o.RawSlug, "name": o.Name, "type": o.Type})
	case "nearestRegion":
		return data(map[string]any{"code": "ord", "name": "Chicago", "gatewayAvailable": true})
	case "listPeers":
		slug, _ := vars["slug"].(string)
		if _, ok := f.orgs[slug]; !ok {
			return 200, map[string]any{"data": map[string]any{"organization": nil}}
		}
		size := f.pageSize
		if n, ok := vars["first"].(float64); ok && int(n) < size {
			size = int(n)
		}
		start := 0
		if a, ok := vars["after"].(string); ok {
			start, _ = strconv.Atoi(strings.TrimPrefix(a, "c"))
		}
		end := min(start+size, len(f.peers))
		var nodes []any
		for _, p := range f.peers[start:end] {
			nodes = append(nodes, map[string]any{"id": p.ID, "name": p.Name, "pubkey": p.PublicKey, "region": p.Region, "peerip": p.PeerIP, "network": nil})
			if f.nilNodes {
				nodes = append(nodes, nil)
			}
		}
		pi := map[string]any{"hasNextPage": end < len(f.peers), "endCursor": "c" + strconv.Itoa(end)}
		if f.loop {
			pi = map[string]any{"hasNextPage": true, "endCursor": "same"}
		}
		return 200, map[string]any{"data": map[string]any{"organization": map[string]any{"wireGuardPeers": map[string]any{"nodes": nodes, "pageInfo": pi}}}}
	case "getPeer":
		slug, _ := vars["slug"].(string)
		name, _ := vars["name"].(string)
		if _, ok := f.orgs[slug]; !ok {
			return 200, map[string]any{"data": map[string]any{"organization": nil}}
		}
		for _, p := range f.peers {
			if p.Name == name {
				return 200, map[string]any{"data": map[string]any{"organization": map[string]any{"wireGuardPeer": map[string]any{
					"id": p.ID, "name": p.Name, "pubkey": p.PublicKey, "region": p.Region, "peerip": p.PeerIP, "network": nil}}}}
			}
		}
		// graphql-ruby: the non-null field's error nulls its parent.
		return 200, map[string]any{"data": map[string]any{"organization": nil}, "errors": []any{map[string]any{
			"message": "Could not find WireGuardPeer", "path": []any{"organization", "wireGuardPeer"}, "extensions": map[string]any{"code": "NOT_FOUND"}}}}
	case "addWireGuardPeer":
		name, _ := input["name"].(string)
		pub, _ := input["pubkey"].(string)
		for _, p := range f.peers {
			if p.Name == name {
				return 200, gqlErrBody("Name has already been taken", "")
			}
		}
		p := Peer{ID: "p" + strconv.Itoa(len(f.peers)+1), Name: name, PublicKey: pub, Region: "ord", PeerIP: f.allocIP()}
		f.peers = append(f.peers, p)
		return data(map[string]any{"peerip": p.PeerIP, "endpointip": testEndpoint, "pubkey": testGWKey})
	case "removeWireGuardPeer":
		name, _ := input["name"].(string)
		for i, p := range f.peers {
			if p.Name == name {
				f.peers = append(f.peers[:i], f.peers[i+1:]...)
				return data(map[string]any{"organization": map[string]any{"id": "T3JnOjE="}})
			}
		}
		return 200, gqlErrBody("Could not find WireGuardPeer with name "+name, "")
	case "validateWireGuardPeers":
		ips, _ := input["peerIps"].([]any)
		invalid := []string{}
		for _, ip := range ips {
			s, _ := ip.(string)
			found := false
			for _, p := range f.peers {
				found = found || p.PeerIP == s
			}
			if !found {
				invalid = append(invalid, s)
			}
		}
		return data(map[string]any{"invalidPeerIps": invalid})
	}
	return 200, gqlErrBody("unknown field", "")
}

// recorded returns the requests received so far.
func (f *fakeFly) recorded() []gqlReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]gqlReq(nil), f.reqs...)
}

// recordSleeps replaces the client's sleep with one that records delays and
// does not wait.
func recordSleeps(c *Client) *[]time.Duration {
	var mu sync.Mutex
	var out []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		out = append(out, d)
		mu.Unlock()
		return ctx.Err()
	}
	return &out
}
