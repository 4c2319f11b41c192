// Package flyapitest is an in-process fake of the Fly.io side that glaceon
// talks to, in the spirit of net/http/httptest:
//
//   - a GraphQL endpoint (POST {URL}/graphql) for the operations in
//     docs/fly-api.md (organization, organizations, personalOrganization,
//     nearestRegion, platform, app, addWireGuardPeer, removeWireGuardPeer,
//     validateWireGuardPeers; organization.wireGuardPeer(name:) and
//     wireGuardPeers for one peer or a page) with FlyV1/Bearer auth and
//     scriptable faults (Server.Faults). Documents are parsed, not
//     string-matched, and answers contain exactly the selected fields
//     (aliases and fragments work). A bad token gets HTTP 200 with code
//     UNAUTHORIZED like the real API (Options.UnauthorizedHTTP401 for 401);
//     a taken name is rejected or replaced (Options.DuplicateName, the real
//     behaviour being unverified); custom networks per org (Org.Networks).
//     Every request is counted by operation and org (RequestCounts), and
//     SeedPeers fills an org with many peers, so tests can assert how many
//     Fly requests something costs, independent of the org's size.
//   - a userspace WireGuard gateway (wireguard-go + gVisor netstack) on UDP
//     127.0.0.1 and ::1, to which peers created through the API are added
//     live (allowed_ip = the peer's /120) and from which removed peers are
//     removed. endpointip is Options.GatewayHost ("localhost").
//   - inside the gateway, per org network fdaa:<net>::/48 (each org its own,
//     traffic between orgs is dropped): the gateway at <prefix48>::1, DNS at
//     <prefix48>::3 port 53 over UDP and TCP, and the sample apps.
//
// Addresses in an org network P (see Server.AppAddr and friends):
//
//	peers            P:a7b:d6b:0:a:<k>02   (one /120 each, never reused)
//	<app>.flycast    P:0:1::<i+2>          (i = index in Options.Apps)
//	<app>.internal   P:a7b:10c:<i+1>:2e4e:2 (also global.<app>, <region>.<app>,
//	                                        top<N>.nearest.of.<app>)
//	_api.internal    P:a7b:10c:ffff:1:2    (answers DNS only)
//	<peer>._peer.internal                  the peer's address
//
// DNS answers AAAA for those names, NOERROR with no answers for other types
// of a known name, NXDOMAIN for everything else (no recursion).
//
// Every app address serves HTTP on port 80 — "/" answers "ok <app>\n",
// "/bytes?n=N" streams N bytes (N ≤ 8 GiB; byte i is byte(i % 251)),
// "/echo" streams the request body back — and a TCP echo on port 7.
//
// Everything listens on loopback only. Close releases every goroutine.
package flyapitest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Orgs served. Default: {personal, RawSlug glaceon-test-123, PERSONAL}
	// and {acme, SHARED}. Empty IDs are generated (opaque, base64 node IDs).
	Orgs []Org
	// Apps served in every org network. Default {"twi-ollama","echo","db"}.
	Apps []string
	// Token accepted by the API (header-ready form). Default: a random
	// macaroon-shaped "FlyV1 fm2_…,fm2_…". Accepted under FlyV1 or Bearer.
	Token string
	// UserToken is a second accepted token (a user token, "fo1_…",
	// sent as "Bearer fo1_…"). Default: a random fo1_ token.
	UserToken string
	// AddOnlyToken, if set, is a token that may read and add peers but gets
	// UNAUTHORIZED on removeWireGuardPeer (like `fly tokens create ssh`).
	AddOnlyToken string
	// UnauthorizedHTTP401 makes a missing or bad token answer HTTP 401.
	// By default it is answered as the real API does: HTTP 200, data null,
	// one error with extensions.code UNAUTHORIZED and the message "You must
	// be authenticated to view this.".
	UnauthorizedHTTP401 bool
	// DuplicateName says what addWireGuardPeer does with a name the org
	// already has. The real API's behaviour is unverified (docs/fly-api.md, "Operations");
	// the default rejects it.
	DuplicateName DuplicateNameMode
	// PageSize is the page size of wireGuardPeers when `first`/`last` are
	// absent. Default 2, so clients that assume one page fail.
	PageSize int
	// MaxPageSize caps `first`/`last` (silently, hasNextPage tells). Default 100.
	MaxPageSize int
	// GatewayHost is returned as endpointip. Default "localhost".
	GatewayHost string
	// GatewayPort is the gateway's UDP port on 127.0.0.1 (and ::1 when
	// available). 0 = $FLY_WG_GATEWAY_PORT or an ephemeral port.
	GatewayPort int
	// WebSocketPort is the gateway's WireGuard-over-WebSocket port (TLS,
	// self-signed) on 127.0.0.1. 0 = $FLY_WG_WEBSOCKET_PORT or ephemeral.
	WebSocketPort int
	// NoGateway disables the WireGuard gateway (API only).
	NoGateway bool
	// Region is the default gateway region and the nearestRegion. Default "yyz".
	Region string
	// Listen is the API listen address. Default "127.0.0.1:0". Must be loopback.
	Listen string
	// Logf, if set, receives one line per request and gateway events.
	// Tokens and keys are never logged.
	Logf func(format string, args ...any)
}

// Org is one Fly organization of the double.
type Org struct {
	ID, Slug, RawSlug, Name, Type string
	// Networks are the org's custom 6PN networks (names as given to
	// `fly ... --network`), each its own /48. addWireGuardPeer accepts
	// network "" (the default network) or one of these; anything else,
	// "default" included, is "Could not find Network" (flyctl maps
	// "default" to "" itself; what the real API does with "default" is
	// unverified). Peers in a custom network get an address in its /48,
	// are listed with it, and are added to the gateway, but the gateway
	// serves DNS and the sample apps in default networks only.
	Networks []string
}

// DuplicateNameMode is what addWireGuardPeer does with a taken name.
type DuplicateNameMode int

const (
	// DuplicateNameReject answers UNPROCESSABLE "Name has already been
	// taken" and changes nothing.
	DuplicateNameReject DuplicateNameMode = iota
	// DuplicateNameReplace removes the old peer of that name (from the
	// gateway too) and creates the new one: the add succeeds.
	DuplicateNameReplace
)

// PeerState is a WireGuard peer as the double stores it.
type PeerState struct {
	ID        string
	Org       string // org slug
	Name      string
	PublicKey string // standard base64
	Region    string
	PeerIP    netip.Addr
	Network   string // "" = the org's default network
	Created   time.Time
}

type orgState struct {
	Org
	num      int64
	netID    uint32
	prefix   netip.Prefix // the /48
	peers    map[string]*peerRec
	nextSlot int
	nets     map[string]*netState // custom networks by name
}

// netState is a custom network of an org.
type netState struct {
	prefix   netip.Prefix
	nextSlot int
}

type peerRec struct {
	PeerState
	seq int64
	org *orgState
}

// Server is a running Fly double.
type Server struct {
	opts   Options
	faults Faults
	// blackholed apps: see Blackhole.
	blackholed blackholes

	mu      sync.Mutex
	orgs    []*orgState
	byKey   map[string]*peerRec // pubkey (b64) -> peer
	seq     int64
	regions []region

	requests atomic.Int64
	countMu  sync.Mutex
	counts   map[RequestKey]int

	ln      net.Listener
	httpSrv *http.Server
	url     string
	srvDone chan struct{}

	gw        *gateway
	inflight  sync.RWMutex // held (R) by running API handlers
	closed    bool         // guarded by inflight
	closeOnce sync.Once
	closeErr  error
}

type region struct {
	Code, Name         string
	Lat, Lon           float64
	Gateway, Paid, Dep bool
}

var defaultRegions = []region{
	{"yyz", "Toronto, Canada", 43.6777, -79.6248, true, false, false},
	{"ord", "Chicago, Illinois (US)", 41.9786, -87.9048, true, false, false},
	{"iad", "Ashburn, Virginia (US)", 39.0438, -77.4874, true, false, false},
	{"sjc", "San Jose, California (US)", 37.3626, -121.929, true, false, false},
	{"ams", "Amsterdam, Netherlands", 52.3740, 4.8897, true, false, false},
	{"fra", "Frankfurt, Germany", 50.1109, 8.6821, true, false, false},
	{"lhr", "London, United Kingdom", 51.5072, -0.1276, true, false, false},
	{"nrt", "Tokyo, Japan", 35.6762, 139.6503, true, false, false},
	{"syd", "Sydney, Australia", -33.8688, 151.2093, true, false, false},
	{"gru", "Sao Paulo, Brazil", -23.5505, -46.6333, false, false, false},
	{"bos", "Boston, Massachusetts (US)", 42.3601, -71.0589, false, true, false},
	{"mad", "Madrid, Spain", 40.4168, -3.7038, false, false, true},
}

// network IDs of the orgs, in order; beyond the table they are derived.
var netIDs = []uint32{0x00000018, 0x0074b6b5, 0x00023f1c, 0x01a20007}

var (
	appNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	networkNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*$`)
)

// NewServer starts a Fly double. Close it when done.
func NewServer(opts Options) (*Server, error) {
	if len(opts.Orgs) == 0 {
		opts.Orgs = []Org{
			{Slug: "personal", RawSlug: "glaceon-test-123", Name: "Glaceon Test", Type: "PERSONAL"},
			{Slug: "acme", Name: "Acme Corp", Type: "SHARED"},
		}
	}
	if len(opts.Apps) == 0 {
		opts.Apps = []string{"twi-ollama", "echo", "db"}
	}
	if opts.Token == "" {
		opts.Token = "FlyV1 fm2_" + randB64(180, false) + ",fm2_" + randB64(90, false)
	}
	if opts.UserToken == "" {
		opts.UserToken = "fo1_" + randB64(32, true)
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 2
	}
	if opts.MaxPageSize <= 0 {
		opts.MaxPageSize = 100
	}
	if opts.GatewayHost == "" {
		opts.GatewayHost = "localhost"
	}
	if opts.Region == "" {
		opts.Region = "yyz"
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.GatewayPort == 0 {
		if v := os.Getenv("FLY_WG_GATEWAY_PORT"); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p <= 0 || p > 65535 {
				return nil, fmt.Errorf("flyapitest: bad FLY_WG_GATEWAY_PORT %q", v)
			}
			opts.GatewayPort = p
		}
	}
	if len(normTokenSegs(opts.Token)) == 0 {
		return nil, errors.New("flyapitest: empty token")
	}

	if opts.DuplicateName != DuplicateNameReject && opts.DuplicateName != DuplicateNameReplace {
		return nil, fmt.Errorf("flyapitest: unknown DuplicateName mode %d", opts.DuplicateName)
	}
	s := &Server{opts: opts, byKey: map[string]*peerRec{}, counts: map[RequestKey]int{}}
	s.regions = append(s.regions, defaultRegions...)
	found := false
	for _, r := range s.regions {
		if r.Code == opts.Region {
			found = true
		}
	}
	if !found {
		s.regions = append([]region{{Code: opts.Region, Name: opts.Region, Gateway: true}}, s.regions...)
	}
	for i, a := range opts.Apps {
		if !appNameRE.MatchString(a) {
			return nil, fmt.Errorf("flyapitest: bad app name %q", a)
		}
		for _, b := range opts.Apps[:i] {
			if a == b {
				return nil, fmt.Errorf("flyapitest: duplicate app %q", a)
			}
		}
	}
	ids := map[string]bool{}
	names := map[string]int{}
	for i, o := range opts.Orgs {
		if o.Slug == "" {
			return nil, fmt.Errorf("flyapitest: org %d has no slug", i)
		}
		num := int64(31337 + 1000*i)
		if o.ID == "" {
			o.ID = base64.StdEncoding.EncodeToString([]byte("Organization/" + strconv.FormatInt(num, 10)))
		}
		if o.RawSlug == "" {
			o.RawSlug = o.Slug
		}
		if o.Name == "" {
			o.Name = o.Slug
		}
		if o.Type == "" {
			o.Type = "SHARED"
		}
		if o.ID == o.Slug || o.ID == o.RawSlug {
			return nil, fmt.Errorf("flyapitest: org %q: ID must be an opaque node ID, not the slug", o.Slug)
		}
		if ids[o.ID] {
			return nil, fmt.Errorf("flyapitest: duplicate org ID %q", o.ID)
		}
		ids[o.ID] = true
		for _, n := range []string{o.Slug, o.RawSlug} {
			if j, ok := names[n]; ok && j != i {
				return nil, fmt.Errorf("flyapitest: duplicate org slug %q", n)
			}
			names[n] = i
		}
		nid := uint32(0x00300000 + i*0x101)
		if i < len(netIDs) {
			nid = netIDs[i]
		}
		var a [16]byte
		a[0], a[1] = 0xfd, 0xaa
		binary.BigEndian.PutUint32(a[2:6], nid)
		st := &orgState{
			Org: o, num: num, netID: nid,
			prefix: netip.PrefixFrom(netip.AddrFrom16(a), 48),
			peers:  map[string]*peerRec{},
			nets:   map[string]*netState{},
		}
		for j, n := range o.Networks {
			if !networkNameRE.MatchString(n) || len(n) > 63 {
				return nil, fmt.Errorf("flyapitest: org %q: bad network name %q: letters, digits and '-', starting with a letter", o.Slug, n)
			}
			if st.nets[n] != nil {
				return nil, fmt.Errorf("flyapitest: org %q: duplicate network %q", o.Slug, n)
			}
			var na [16]byte
			na[0], na[1] = 0xfd, 0xaa
			binary.BigEndian.PutUint32(na[2:6], 0x00500000+uint32(i)<<8+uint32(j)+1)
			st.nets[n] = &netState{prefix: netip.PrefixFrom(netip.AddrFrom16(na), 48)}
		}
		s.orgs = append(s.orgs, st)
	}

	if host, _, err := net.SplitHostPort(opts.Listen); err != nil {
		return nil, fmt.Errorf("flyapitest: bad Listen %q: %v", opts.Listen, err)
	} else if a, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !a.IsLoopback()) {
		return nil, fmt.Errorf("flyapitest: Listen %q is not a loopback address", opts.Listen)
	}

	if !opts.NoGateway {
		gw, err := newGateway(s)
		if err != nil {
			return nil, err
		}
		s.gw = gw
	}

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		if s.gw != nil {
			s.gw.close()
		}
		return nil, fmt.Errorf("flyapitest: listen: %w", err)
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err != nil || !ap.Addr().IsLoopback() {
		ln.Close()
		if s.gw != nil {
			s.gw.close()
		}
		return nil, fmt.Errorf("flyapitest: listen address %s is not loopback", ln.Addr())
	}
	s.ln = ln
	s.url = "http://" + ln.Addr().String()
	s.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	s.srvDone = make(chan struct{})
	go func() {
		defer close(s.srvDone)
		_ = s.httpSrv.Serve(ln)
	}()
	s.logf("flyapitest: API on %s, gateway %s", s.url, s.gatewayDesc())
	return s, nil
}

// Start is NewServer for tests: it fails tb on error and closes the server
// in tb.Cleanup.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	s, err := NewServer(opts)
	if err != nil {
		tb.Fatalf("flyapitest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("flyapitest: close: %v", err)
		}
	})
	return s
}

func (s *Server) gatewayDesc() string {
	if s.gw == nil {
		return "disabled"
	}
	return fmt.Sprintf("udp %s port %d", s.opts.GatewayHost, s.gw.port)
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// URL is the API base URL, e.g. http://127.0.0.1:PORT (POST {URL}/graphql).
func (s *Server) URL() string { return s.url }

// Token is the token to use as FLY_API_TOKEN (header-ready form).
func (s *Server) Token() string { return s.opts.Token }

// UserToken is the second accepted token (send it as "Bearer <token>").
func (s *Server) UserToken() string { return s.opts.UserToken }

// GatewayHost is the host name returned as endpointip.
func (s *Server) GatewayHost() string { return s.opts.GatewayHost }

// GatewayPort is the gateway's UDP port (0 when the gateway is disabled).
func (s *Server) GatewayPort() int {
	if s.gw == nil {
		return 0
	}
	return s.gw.port
}

// GatewayAddr is the gateway's IPv4 loopback UDP address.
func (s *Server) GatewayAddr() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(s.GatewayPort()))
}

// GatewayPublicKey is the gateway's WireGuard public key (standard base64),
// the `pubkey` returned by addWireGuardPeer.
func (s *Server) GatewayPublicKey() string {
	if s.gw == nil {
		return gatewayPubFallback
	}
	return base64.StdEncoding.EncodeToString(s.gw.pub[:])
}

// Faults gives access to the scripted faults.
func (s *Server) Faults() *Faults { return &s.faults }

// Requests is the number of GraphQL requests received so far (all of them,
// including faulted and unauthorized ones).
func (s *Server) Requests() int { return int(s.requests.Load()) }

// RequestKey is a class of GraphQL requests counted by the double.
type RequestKey struct {
	// Op is the request's top-level field ("addWireGuardPeer",
	// "removeWireGuardPeer", "nearestRegion", ...); an organization query
	// that selects wireGuardPeers or wireGuardPeer is
	// "organization.wireGuardPeers" or "organization.wireGuardPeer"
	// (a plain org lookup stays "organization"). Several top-level fields
	// are joined with ","; a document that does not parse is "?".
	Op string
	// Org is the canonical slug of the org the request names (by slug,
	// raw slug, name or organizationId), the slug as sent for an unknown
	// slug, or "" when it names none (nearestRegion, validateWireGuardPeers)
	// or an unknown ID.
	Org string
}

// RequestCounts returns how many requests of each kind the double received
// (faulted and unauthorized ones included) since it started or since
// ResetRequestCounts.
func (s *Server) RequestCounts() map[RequestKey]int {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	out := make(map[RequestKey]int, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// OrgRequests is the number of counted requests that named org (its slug
// or raw slug).
func (s *Server) OrgRequests(org string) int {
	if o := s.findOrg(org); o != nil {
		org = o.Slug
	}
	n := 0
	for k, v := range s.RequestCounts() {
		if k.Org == org {
			n += v
		}
	}
	return n
}

// OpRequests is the number of counted requests with this RequestKey.Op.
func (s *Server) OpRequests(op string) int {
	n := 0
	for k, v := range s.RequestCounts() {
		if k.Op == op {
			n += v
		}
	}
	return n
}

// ResetRequestCounts zeroes RequestCounts (not Requests).
func (s *Server) ResetRequestCounts() {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	clear(s.counts)
}

func (s *Server) countRequest(k RequestKey) {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	s.counts[k]++
}

// Region is the default region (nearestRegion).
func (s *Server) Region() string { return s.opts.Region }

// Apps lists the app names served in every org network.
func (s *Server) Apps() []string { return append([]string(nil), s.opts.Apps...) }

// Orgs lists the orgs (with their generated IDs).
func (s *Server) Orgs() []Org {
	var out []Org
	for _, o := range s.orgs {
		out = append(out, o.Org)
	}
	return out
}

func (s *Server) findOrg(slug string) *orgState {
	for _, o := range s.orgs {
		if o.Slug == slug {
			return o
		}
	}
	for _, o := range s.orgs {
		if o.RawSlug == slug {
			return o
		}
	}
	return nil
}

func (s *Server) orgByID(id string) *orgState {
	for _, o := range s.orgs {
		if o.ID == id {
			return o
		}
	}
	return nil
}

// OrgID returns the node ID of the org with this slug or raw slug ("" if none).
func (s *Server) OrgID(slug string) string {
	if o := s.findOrg(slug); o != nil {
		return o.ID
	}
	return ""
}

// OrgPrefix is the org's 6PN /48 (invalid prefix for an unknown org).
func (s *Server) OrgPrefix(org string) netip.Prefix {
	if o := s.findOrg(org); o != nil {
		return o.prefix
	}
	return netip.Prefix{}
}

// DNSAddr is the org's in-tunnel DNS server, <prefix48>::3.
func (s *Server) DNSAddr(org string) netip.Addr {
	if o := s.findOrg(org); o != nil {
		return addrIn(o.prefix, 0, 0, 0, 0, 3)
	}
	return netip.Addr{}
}

// AppAddr is the flycast address of app in org's network
// (fdaa:<net>:0:1::<n>); invalid for an unknown app or org.
func (s *Server) AppAddr(app, org string) netip.Addr {
	o := s.findOrg(org)
	i := s.appIndex(app)
	if o == nil || i < 0 {
		return netip.Addr{}
	}
	return flycastAddr(o.prefix, i)
}

// AppInternalAddr is the app's (single) Machine 6PN address in org's
// network, what <app>.internal resolves to.
func (s *Server) AppInternalAddr(app, org string) netip.Addr {
	o := s.findOrg(org)
	i := s.appIndex(app)
	if o == nil || i < 0 {
		return netip.Addr{}
	}
	return internalAddr(o.prefix, i)
}

func (s *Server) appIndex(app string) int {
	for i, a := range s.opts.Apps {
		if a == app {
			return i
		}
	}
	return -1
}

// addrIn builds <prefix48>:g3:g4:g5:g6:g7 with the last five 16-bit groups.
func addrIn(p netip.Prefix, g ...uint16) netip.Addr {
	a := p.Addr().As16()
	for i, v := range g {
		binary.BigEndian.PutUint16(a[6+2*i:], v)
	}
	return netip.AddrFrom16(a)
}

func flycastAddr(p netip.Prefix, i int) netip.Addr { return addrIn(p, 0, 1, 0, 0, uint16(i+2)) }
func internalAddr(p netip.Prefix, i int) netip.Addr {
	return addrIn(p, 0xa7b, 0x10c, uint16(i+1), 0x2e4e, 2)
}
func apiInternalAddr(p netip.Prefix) netip.Addr { return addrIn(p, 0xa7b, 0x10c, 0xffff, 0x1, 2) }

const gatewayGroup = 0xd6b

// peerAddr is fdaa:<net>:a7b:<gw>:0:a:<k>02 (slot k), whose /120 is routed to
// the peer. Past 256 peers the 7th group moves on.
func peerAddr(p netip.Prefix, k int) netip.Addr {
	return addrIn(p, 0xa7b, gatewayGroup, 0, uint16(0xa+k/256), uint16((k%256)<<8|2))
}

// Peers returns the peers of an org (by slug or raw slug; "" = all orgs),
// oldest first.
func (s *Server) Peers(orgSlug string) []PeerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []*peerRec
	for _, o := range s.orgs {
		if orgSlug != "" && o.Slug != orgSlug && o.RawSlug != orgSlug {
			continue
		}
		for _, p := range o.peers {
			recs = append(recs, p)
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].seq < recs[j].seq })
	out := make([]PeerState, len(recs))
	for i, p := range recs {
		out[i] = p.PeerState
	}
	return out
}

// PeerCount is the number of peers across all orgs.
func (s *Server) PeerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}

// AddPeer creates a peer directly (no HTTP, no faults), e.g. to seed a
// leaked peer. Errors are the API's.
func (s *Server) AddPeer(org, name, pubkey string) (PeerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.findOrg(org)
	if o == nil {
		return PeerState{}, newGQLError("NOT_FOUND", "Could not find Organization")
	}
	p, err := s.addPeerLocked(o, name, pubkey, "", "")
	if err != nil {
		return PeerState{}, err
	}
	return p.PeerState, nil
}

// SeedPeers adds n peers named <prefix><i> (i = 0..n-1) with random public
// keys to org directly (no HTTP, no faults, not counted): an org of a
// realistic size (e.g. 2,000 peers) for tests that count Fly requests.
func (s *Server) SeedPeers(org, prefix string, n int) ([]PeerState, error) {
	if n < 0 || n > 100000 {
		return nil, fmt.Errorf("flyapitest: SeedPeers: n = %d out of 0..100000", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.findOrg(org)
	if o == nil {
		return nil, newGQLError("NOT_FOUND", "Could not find Organization")
	}
	out := make([]PeerState, 0, n)
	for i := 0; i < n; i++ {
		p, err := s.addPeerLocked(o, prefix+strconv.Itoa(i), randB64(32, false), "", "")
		if err != nil {
			return out, fmt.Errorf("flyapitest: SeedPeers %s%d: %w", prefix, i, err)
		}
		out = append(out, p.PeerState)
	}
	return out, nil
}

// RemovePeer deletes a peer directly (no HTTP, no faults).
func (s *Server) RemovePeer(org, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.findOrg(org)
	if o == nil {
		return newGQLError("NOT_FOUND", "Could not find Organization")
	}
	return s.removePeerLocked(o, name)
}

// LastHandshake is the time of the gateway's last completed handshake with
// the peer whose public key (base64) is given; zero if none.
func (s *Server) LastHandshake(pubkey string) time.Time {
	if s.gw == nil {
		return time.Time{}
	}
	return s.gw.lastHandshake(pubkey)
}

// StopGateway stops the WireGuard gateway (its UDP sockets close and its
// sessions are lost, like a gateway restart). Peers stay in the API state,
// and the netstack behind the gateway (DNS, apps, open TCP connections)
// keeps running.
func (s *Server) StopGateway() error {
	if s.gw == nil {
		return errors.New("flyapitest: gateway disabled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gw.stopDevice()
}

// StartGateway starts the gateway again on the same UDP port with the
// current peers. Clients must handshake again (wireguard-go does so by
// itself about 15 s after its data stops being answered).
func (s *Server) StartGateway() error {
	if s.gw == nil {
		return errors.New("flyapitest: gateway disabled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gw.startDevice(s.allPeersLocked())
}

func (s *Server) allPeersLocked() []*peerRec {
	var out []*peerRec
	for _, p := range s.byKey {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// Close stops the API server and the gateway and releases everything.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.httpSrv != nil {
			if err := s.httpSrv.Close(); err != nil {
				errs = append(errs, err)
			}
			<-s.srvDone
		}
		// wait for handlers still running (e.g. a slow fault)
		s.inflight.Lock()
		s.closed = true
		s.inflight.Unlock()
		if s.gw != nil {
			if err := s.gw.close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func randB64(n int, url bool) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if url {
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// normTokenSegs applies docs/fly-api.md ("Transport"): trim, strip
// Bearer/FlyV1 schemes (case-insensitively, repeatedly), split on commas,
// trim each part.
func normTokenSegs(tok string) []string {
	tok = strings.TrimSpace(tok)
	for {
		l := strings.ToLower(tok)
		switch {
		case strings.HasPrefix(l, "bearer ") || strings.HasPrefix(l, "bearer\t"):
			tok = strings.TrimSpace(tok[len("bearer"):])
		case strings.HasPrefix(l, "flyv1 ") || strings.HasPrefix(l, "flyv1\t"):
			tok = strings.TrimSpace(tok[len("flyv1"):])
		default:
			var out []string
			for _, p := range strings.Split(tok, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
			return out
		}
	}
}
