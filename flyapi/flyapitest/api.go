package flyapitest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const maxBodyBytes = 1 << 20

type gqlRequest struct {
	Query         string         `json:"query"`
	Variables     map[string]any `json:"variables"`
	OperationName string         `json:"operationName"`
}

type gqlResponse struct {
	Data   any         `json:"data"`
	Errors []*gqlError `json:"errors,omitempty"`
}

type authScope int

const (
	authNone authScope = iota
	authFull
	authAddOnly
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/graphql" {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, gqlResponse{Errors: []*gqlError{{Message: "only POST is supported"}}})
		return
	}
	s.inflight.RLock()
	defer s.inflight.RUnlock()
	if s.closed {
		writeJSON(w, http.StatusServiceUnavailable, gqlResponse{Errors: []*gqlError{{Message: "server closed"}}})
		return
	}
	s.requests.Add(1)
	start := time.Now()

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return
	}
	if len(body) > maxBodyBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, gqlResponse{Errors: []*gqlError{{Message: "request body too large"}}})
		return
	}
	var req gqlRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		s.logf("flyapitest: POST /graphql: bad JSON body")
		writeJSON(w, http.StatusBadRequest, gqlResponse{Errors: []*gqlError{newGQLError("BAD_REQUEST", "Invalid JSON in request body: %v", err)}})
		return
	}
	vars := normalizeJSON(req.Variables).(map[string]any)

	doc, perr := parseDocument(req.Query)
	var op *gqlOperation
	if perr == nil {
		op, perr = doc.pickOperation(req.OperationName)
	}
	var ops []string
	if op != nil {
		for _, sel := range op.sel {
			if !sel.isFragment {
				ops = append(ops, sel.name)
			}
		}
	}
	opDesc := strings.Join(ops, ",")
	if opDesc == "" {
		opDesc = "?"
	}
	s.countRequest(s.requestKey(op, vars, opDesc))

	status := http.StatusOK
	defer func() {
		s.logf("flyapitest: POST /graphql %s -> %d (%s)", opDesc, status, time.Since(start).Round(time.Microsecond))
	}()

	// Scripted faults act like infrastructure in front of the API: before
	// authentication.
	fault, faulted := s.faults.take(ops)
	if faulted {
		switch fault.Kind {
		case FaultHTTP401:
			status = http.StatusUnauthorized
			writeJSON(w, status, gqlResponse{Errors: []*gqlError{unauthorizedErr(nil)}})
			return
		case FaultUnauthorizedCode:
			writeJSON(w, status, gqlResponse{Errors: []*gqlError{unauthorizedErr(firstPath(ops))}})
			return
		case Fault429:
			ra := fault.RetryAfter
			if ra <= 0 {
				ra = time.Second
			}
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ra.Seconds()))))
			status = http.StatusTooManyRequests
			writeJSON(w, status, gqlResponse{Errors: []*gqlError{newGQLError("RATE_LIMITED", "Rate limit exceeded")}})
			return
		case Fault502:
			status = http.StatusBadGateway
			writeRaw(w, status, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
			return
		case Fault503:
			status = http.StatusServiceUnavailable
			writeRaw(w, status, "text/html", "<html><body><h1>503 Service Unavailable</h1></body></html>\n")
			return
		case FaultServerErrorCode:
			writeJSON(w, status, gqlResponse{Errors: []*gqlError{{Message: "Internal server error", Path: firstPath(ops), Extensions: map[string]any{"code": "SERVER_ERROR"}}}})
			return
		case FaultDropConnection:
			status = 0
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case FaultSlow:
			d := fault.Delay
			if d <= 0 {
				d = 2 * time.Second
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				status = 0
				return
			}
		}
	}

	scope := s.authenticate(r.Header.Get("Authorization"))
	if scope == authNone {
		if s.opts.UnauthorizedHTTP401 {
			status = http.StatusUnauthorized
			writeJSON(w, status, gqlResponse{Errors: []*gqlError{unauthorizedErr(nil)}})
			return
		}
		writeJSON(w, status, gqlResponse{Errors: []*gqlError{unauthorizedErr(firstPath(ops))}})
		return
	}

	var resp gqlResponse
	if perr != nil {
		resp = gqlResponse{Errors: []*gqlError{{Message: "Parse error: " + perr.Error(), Extensions: map[string]any{"code": "parseError"}}}}
	} else {
		resp = s.execute(r.Context(), doc, op, vars, scope)
	}
	if faulted && fault.Kind == FaultApplyThen502 {
		status = http.StatusBadGateway
		writeRaw(w, status, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
		return
	}
	writeJSON(w, status, resp)
}

// requestKey classifies a request for RequestCounts. s.orgs never changes
// after NewServer, so no lock is needed.
func (s *Server) requestKey(op *gqlOperation, vars map[string]any, opDesc string) RequestKey {
	k := RequestKey{Op: opDesc}
	if op == nil {
		return k
	}
	for _, sel := range op.sel {
		if sel.isFragment {
			continue
		}
		args := resolveArgs(sel.args, vars)
		if sel.name == "organization" && len(op.sel) == 1 {
			for _, sub := range sel.sub {
				if !sub.isFragment && (sub.name == "wireGuardPeers" || sub.name == "wireGuardPeer") {
					k.Op = "organization." + sub.name
				}
			}
		}
		if k.Org != "" {
			continue
		}
		switch {
		case str(args["slug"]) != "":
			k.Org = str(args["slug"])
			if o := s.findOrg(k.Org); o != nil {
				k.Org = o.Slug
			}
		case str(args["id"]) != "":
			if o := s.orgByID(str(args["id"])); o != nil {
				k.Org = o.Slug
			}
		case str(args["name"]) != "" && sel.name == "organization":
			for _, o := range s.orgs {
				if o.Name == str(args["name"]) {
					k.Org = o.Slug
				}
			}
		default:
			if in, ok := args["input"].(map[string]any); ok {
				if o := s.orgByID(str(in["organizationId"])); o != nil {
					k.Org = o.Slug
				}
			}
		}
	}
	return k
}

func firstPath(ops []string) []any {
	if len(ops) == 0 {
		return nil
	}
	return []any{ops[0]}
}

func unauthorizedErr(path []any) *gqlError {
	return &gqlError{Message: "You must be authenticated to view this.", Path: path, Extensions: map[string]any{"code": "UNAUTHORIZED"}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"data":null,"errors":[{"message":"internal error encoding response","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeRaw(w http.ResponseWriter, status int, ctype, body string) {
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// authenticate checks the Authorization header. A scheme (FlyV1 or Bearer)
// is required; the token's segments must all be present.
func (s *Server) authenticate(h string) authScope {
	h = strings.TrimSpace(h)
	l := strings.ToLower(h)
	if !strings.HasPrefix(l, "flyv1 ") && !strings.HasPrefix(l, "bearer ") {
		return authNone
	}
	got := map[string]bool{}
	for _, seg := range normTokenSegs(h) {
		got[seg] = true
	}
	has := func(tok string) bool {
		segs := normTokenSegs(tok)
		if len(segs) == 0 {
			return false
		}
		for _, seg := range segs {
			if !got[seg] {
				return false
			}
		}
		return true
	}
	switch {
	case has(s.opts.Token), has(s.opts.UserToken):
		return authFull
	case s.opts.AddOnlyToken != "" && has(s.opts.AddOnlyToken):
		return authAddOnly
	}
	return authNone
}

// normalizeJSON turns json.Number into float64 and a nil map into an empty one.
func normalizeJSON(v any) any {
	switch x := v.(type) {
	case nil:
		return map[string]any{}
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalizeValue(e)
		}
		return out
	}
	return map[string]any{}
}

func normalizeValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalizeValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeValue(e)
		}
		return out
	}
	return v
}

func (s *Server) execute(ctx context.Context, doc *gqlDocument, op *gqlOperation, vars map[string]any, scope authScope) gqlResponse {
	// Apply variable defaults.
	for _, vd := range op.vars {
		if _, ok := vars[vd.name]; !ok && vd.def != nil {
			vars[vd.name] = resolveValue(*vd.def, nil)
		}
	}
	var root *obj
	switch op.typ {
	case "query":
		root = s.queryRoot()
	case "mutation":
		root = s.mutationRoot(scope)
	default:
		return gqlResponse{Errors: []*gqlError{newGQLError("", "%s operations are not supported", op.typ)}}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := doc.project(root, op.sel, vars, nil)
	if err != nil {
		ge, ok := err.(*gqlError)
		if !ok {
			ge = &gqlError{Message: err.Error()}
		}
		return gqlResponse{Data: nil, Errors: []*gqlError{ge}}
	}
	return gqlResponse{Data: data}
}

// ---- roots and objects (resolvers run with s.mu held) ----

func (s *Server) queryRoot() *obj {
	return &obj{typ: "Query", fields: map[string]any{
		"organization": resolver(func(a map[string]any) (any, error) {
			var o *orgState
			switch {
			case str(a["id"]) != "":
				o = s.orgByID(str(a["id"]))
			case str(a["slug"]) != "":
				o = s.findOrg(str(a["slug"]))
			case str(a["name"]) != "":
				for _, x := range s.orgs {
					if x.Name == str(a["name"]) {
						o = x
					}
				}
			}
			if o == nil {
				return nil, nil // organization: null
			}
			return s.orgObj(o), nil
		}),
		"organizations": resolver(func(a map[string]any) (any, error) {
			var nodes []*obj
			for _, o := range s.orgs {
				nodes = append(nodes, s.orgObj(o))
			}
			return simpleConnection("OrganizationConnection", "OrganizationEdge", nodes), nil
		}),
		"personalOrganization": resolver(func(map[string]any) (any, error) {
			for _, o := range s.orgs {
				if o.Type == "PERSONAL" {
					return s.orgObj(o), nil
				}
			}
			return nil, newGQLError("NOT_FOUND", "Could not find Organization")
		}),
		"nearestRegion": resolver(func(map[string]any) (any, error) {
			for _, r := range s.regions {
				if r.Code == s.opts.Region {
					return regionObj(r), nil
				}
			}
			return nil, newGQLError("NOT_FOUND", "Could not find Region")
		}),
		"platform": &obj{typ: "FlyPlatform", fields: map[string]any{
			"requestRegion": s.opts.Region,
			"regions": resolver(func(map[string]any) (any, error) {
				var out []*obj
				for _, r := range s.regions {
					out = append(out, regionObj(r))
				}
				return out, nil
			}),
			"vmSizes": []*obj{},
		}},
		"app": resolver(func(a map[string]any) (any, error) {
			name := str(a["name"])
			i := s.appIndex(name)
			if i < 0 || len(s.orgs) == 0 {
				return nil, newGQLError("NOT_FOUND", "Could not find App")
			}
			o := s.orgs[0]
			fc := flycastAddr(o.prefix, i)
			ip := &obj{typ: "IPAddress", fields: map[string]any{
				"id":          base64.StdEncoding.EncodeToString([]byte("IPAddress/" + fc.String())),
				"address":     fc.String(),
				"type":        "private_v6",
				"region":      "global",
				"createdAt":   "2026-01-01T00:00:00Z",
				"serviceName": nil,
				"network":     &obj{typ: "Network", fields: map[string]any{"name": "default", "organization": s.orgObj(o)}},
			}}
			return &obj{typ: "App", fields: map[string]any{
				"id":              name,
				"name":            name,
				"network":         "default",
				"organization":    s.orgObj(o),
				"sharedIpAddress": nil,
				"ipAddresses":     simpleConnection("IPAddressConnection", "IPAddressEdge", []*obj{ip}),
			}}, nil
		}),
	}}
}

func regionObj(r region) *obj {
	return &obj{typ: "Region", fields: map[string]any{
		"code": r.Code, "name": r.Name, "latitude": r.Lat, "longitude": r.Lon,
		"gatewayAvailable": r.Gateway, "requiresPaidPlan": r.Paid, "deprecated": r.Dep,
		"processGroup": nil,
	}}
}

func simpleConnection(typ, edgeTyp string, nodes []*obj) *obj {
	if nodes == nil {
		nodes = []*obj{}
	}
	edges := make([]*obj, len(nodes))
	for i, n := range nodes {
		edges[i] = &obj{typ: edgeTyp, fields: map[string]any{"cursor": encodeCursor(int64(i + 1)), "node": n}}
	}
	var start, end any
	if len(nodes) > 0 {
		start, end = encodeCursor(1), encodeCursor(int64(len(nodes)))
	}
	return &obj{typ: typ, fields: map[string]any{
		"nodes": nodes, "edges": edges, "totalCount": len(nodes),
		"pageInfo": &obj{typ: "PageInfo", fields: map[string]any{"hasNextPage": false, "hasPreviousPage": false, "startCursor": start, "endCursor": end}},
	}}
}

func (s *Server) orgObj(o *orgState) *obj {
	return &obj{typ: "Organization", fields: map[string]any{
		"id":                o.ID,
		"internalNumericId": strconv.FormatInt(o.num, 10),
		"slug":              o.Slug,
		"rawSlug":           o.RawSlug,
		"name":              o.Name,
		"type":              o.Type,
		"billable":          true,
		"paidPlan":          true,
		"viewerRole":        "admin",
		"wireGuardPeers": resolver(func(a map[string]any) (any, error) {
			return s.peerConnection(o, a)
		}),
		"wireGuardPeer": resolver(func(a map[string]any) (any, error) {
			name := str(a["name"])
			p, ok := o.peers[name]
			if !ok {
				return nil, newGQLError("NOT_FOUND", "Could not find WireGuardPeer")
			}
			return peerObj(p), nil
		}),
		"delegatedWireGuardTokens": resolver(func(map[string]any) (any, error) {
			return simpleConnection("DelegatedWireGuardTokenConnection", "DelegatedWireGuardTokenEdge", nil), nil
		}),
	}}
}

func peerObj(p *peerRec) *obj {
	var network any
	if p.Network != "" {
		network = p.Network
	}
	return &obj{typ: "WireGuardPeer", fields: map[string]any{
		"id": p.ID, "name": p.Name, "pubkey": p.PublicKey, "region": p.Region,
		"peerip": p.PeerIP.String(), "network": network,
	}}
}

func encodeCursor(seq int64) string {
	return base64.StdEncoding.EncodeToString([]byte("cursor:" + strconv.FormatInt(seq, 10)))
}

func decodeCursor(c string) (int64, bool) {
	b, err := base64.StdEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(b), "cursor:") {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b[len("cursor:"):]), 10, 64)
	return n, err == nil && n >= 0
}

func intArg(a map[string]any, k string) (int, bool, error) {
	v, ok := a[k]
	if !ok || v == nil {
		return 0, false, nil
	}
	f, isNum := v.(float64)
	if !isNum || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
		return 0, false, newGQLError("INVALID_ARGUMENTS", "Argument '%s' must be a non-negative integer", k)
	}
	return int(f), true, nil
}

func (s *Server) peerConnection(o *orgState, a map[string]any) (any, error) {
	all := make([]*peerRec, 0, len(o.peers))
	for _, p := range o.peers {
		all = append(all, p)
	}
	sortPeers(all)
	window := all
	for _, k := range []string{"after", "before"} {
		v, ok := a[k]
		if !ok || v == nil {
			continue
		}
		cs, isStr := v.(string)
		seq, good := decodeCursor(cs)
		if !isStr || !good {
			return nil, newGQLError("INVALID_ARGUMENTS", "Invalid cursor for '%s'", k)
		}
		var w []*peerRec
		for _, p := range window {
			if (k == "after" && p.seq > seq) || (k == "before" && p.seq < seq) {
				w = append(w, p)
			}
		}
		window = w
	}
	first, hasFirst, err := intArg(a, "first")
	if err != nil {
		return nil, err
	}
	last, hasLast, err := intArg(a, "last")
	if err != nil {
		return nil, err
	}
	if hasFirst && hasLast {
		return nil, newGQLError("INVALID_ARGUMENTS", "Passing both `first` and `last` to paginate the `wireGuardPeers` connection is not supported.")
	}
	if !hasFirst && !hasLast {
		first, hasFirst = s.opts.PageSize, true
	}
	if first > s.opts.MaxPageSize {
		first = s.opts.MaxPageSize
	}
	if last > s.opts.MaxPageSize {
		last = s.opts.MaxPageSize
	}
	page := window
	if hasFirst && len(page) > first {
		page = page[:first]
	}
	if hasLast && len(page) > last {
		page = page[len(page)-last:]
	}
	nodes := make([]*obj, len(page))
	edges := make([]*obj, len(page))
	for i, p := range page {
		nodes[i] = peerObj(p)
		edges[i] = &obj{typ: "WireGuardPeerEdge", fields: map[string]any{"cursor": encodeCursor(p.seq), "node": nodes[i]}}
	}
	var startC, endC any
	hasNext, hasPrev := false, false
	if len(page) > 0 {
		startC, endC = encodeCursor(page[0].seq), encodeCursor(page[len(page)-1].seq)
		hasPrev = page[0].seq > all[0].seq
		hasNext = page[len(page)-1].seq < all[len(all)-1].seq
	} else if len(window) > 0 {
		hasNext = true // first: 0
	}
	return &obj{typ: "WireGuardPeerConnection", fields: map[string]any{
		"nodes": nodes, "edges": edges, "totalCount": len(all),
		"pageInfo": &obj{typ: "PageInfo", fields: map[string]any{
			"hasNextPage": hasNext, "hasPreviousPage": hasPrev, "startCursor": startC, "endCursor": endC,
		}},
	}}, nil
}

func sortPeers(ps []*peerRec) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].seq < ps[j].seq })
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func inputArg(a map[string]any) (map[string]any, error) {
	in, ok := a["input"].(map[string]any)
	if !ok {
		return nil, newGQLError("INVALID_ARGUMENTS", "Argument 'input' is required and must be an input object")
	}
	return in, nil
}

func requireString(in map[string]any, k, typ string) (string, error) {
	v, ok := in[k].(string)
	if !ok {
		return "", newGQLError("INVALID_ARGUMENTS", "%s.%s is required and must be a String", typ, k)
	}
	return v, nil
}

func (s *Server) mutationRoot(scope authScope) *obj {
	return &obj{typ: "Mutation", fields: map[string]any{
		"addWireGuardPeer": resolver(func(a map[string]any) (any, error) {
			in, err := inputArg(a)
			if err != nil {
				return nil, err
			}
			orgID, err := requireString(in, "organizationId", "AddWireGuardPeerInput")
			if err != nil {
				return nil, err
			}
			name, err := requireString(in, "name", "AddWireGuardPeerInput")
			if err != nil {
				return nil, err
			}
			pub, err := requireString(in, "pubkey", "AddWireGuardPeerInput")
			if err != nil {
				return nil, err
			}
			o := s.orgByID(orgID)
			if o == nil {
				return nil, newGQLError("NOT_FOUND", "Could not find Organization")
			}
			p, err := s.addPeerLocked(o, name, pub, str(in["region"]), str(in["network"]))
			if err != nil {
				return nil, err
			}
			var network any
			if p.Network != "" {
				network = p.Network
			}
			return &obj{typ: "AddWireGuardPeerPayload", fields: map[string]any{
				"peerip":           p.PeerIP.String(),
				"endpointip":       s.opts.GatewayHost,
				"pubkey":           s.GatewayPublicKey(),
				"network":          network,
				"clientMutationId": in["clientMutationId"],
			}}, nil
		}),
		"removeWireGuardPeer": resolver(func(a map[string]any) (any, error) {
			if scope != authFull {
				return nil, newGQLError("UNAUTHORIZED", "Not authorized to access this removeWireGuardPeer")
			}
			in, err := inputArg(a)
			if err != nil {
				return nil, err
			}
			orgID, err := requireString(in, "organizationId", "RemoveWireGuardPeerInput")
			if err != nil {
				return nil, err
			}
			name, err := requireString(in, "name", "RemoveWireGuardPeerInput")
			if err != nil {
				return nil, err
			}
			o := s.orgByID(orgID)
			if o == nil {
				return nil, newGQLError("NOT_FOUND", "Could not find Organization")
			}
			if err := s.removePeerLocked(o, name); err != nil {
				return nil, err
			}
			return &obj{typ: "RemoveWireGuardPeerPayload", fields: map[string]any{
				"organization":     s.orgObj(o),
				"clientMutationId": in["clientMutationId"],
			}}, nil
		}),
		"validateWireGuardPeers": resolver(func(a map[string]any) (any, error) {
			in, err := inputArg(a)
			if err != nil {
				return nil, err
			}
			list, ok := in["peerIps"].([]any)
			if !ok {
				return nil, newGQLError("INVALID_ARGUMENTS", "ValidateWireGuardPeersInput.peerIps is required and must be a list of String")
			}
			valid, invalid := []any{}, []any{}
			for _, e := range list {
				ipStr, ok := e.(string)
				if !ok {
					return nil, newGQLError("INVALID_ARGUMENTS", "ValidateWireGuardPeersInput.peerIps must be a list of String")
				}
				if s.peerIPKnownLocked(ipStr) {
					valid = append(valid, ipStr)
				} else {
					invalid = append(invalid, ipStr)
				}
			}
			return &obj{typ: "ValidateWireGuardPeersPayload", fields: map[string]any{
				"validPeerIps": valid, "invalidPeerIps": invalid, "clientMutationId": in["clientMutationId"],
			}}, nil
		}),
	}}
}

func (s *Server) peerIPKnownLocked(ipStr string) bool {
	ip, err := netip.ParseAddr(strings.TrimSpace(ipStr))
	if err != nil {
		return false
	}
	for _, p := range s.byKey {
		if p.PeerIP == ip {
			return true
		}
	}
	return false
}

var peerNameRE = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

func (s *Server) addPeerLocked(o *orgState, name, pub, reg, network string) (*peerRec, error) {
	if !peerNameRE.MatchString(name) || len(name) > 255 {
		return nil, newGQLError("UNPROCESSABLE", "Name can only contain letters, numbers, and dashes")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(pub))
	if err != nil || len(key) != 32 {
		n := len(key)
		if err != nil {
			n = -1
		}
		if n < 0 {
			return nil, newGQLError("INVALID_ARGUMENTS", "pubkey parse error: not valid base64")
		}
		return nil, newGQLError("INVALID_ARGUMENTS", "pubkey parse error: wgtypes: incorrect key size: %d", n)
	}
	pub = base64.StdEncoding.EncodeToString(key)
	if reg == "" {
		reg = s.opts.Region
	}
	regOK := false
	for _, r := range s.regions {
		if r.Code == reg && r.Gateway {
			regOK = true
		}
	}
	if !regOK {
		return nil, newGQLError("INVALID_ARGUMENTS", "Region %s does not have a WireGuard gateway", reg)
	}
	prefix, nextSlot := o.prefix, &o.nextSlot
	if network != "" {
		n := o.nets[network]
		if n == nil {
			return nil, newGQLError("NOT_FOUND", "Could not find Network")
		}
		prefix, nextSlot = n.prefix, &n.nextSlot
	}
	if old, dup := o.peers[name]; dup {
		if s.opts.DuplicateName != DuplicateNameReplace {
			return nil, newGQLError("UNPROCESSABLE", "Name has already been taken")
		}
		if other, taken := s.byKey[pub]; taken && other != old {
			return nil, newGQLError("UNPROCESSABLE", "Pubkey has already been taken")
		}
		if err := s.removePeerLocked(o, name); err != nil {
			return nil, err
		}
	}
	if _, dup := s.byKey[pub]; dup {
		return nil, newGQLError("UNPROCESSABLE", "Pubkey has already been taken")
	}
	s.seq++
	slot := *nextSlot
	*nextSlot++
	p := &peerRec{seq: s.seq, org: o}
	p.PeerState = PeerState{
		ID:        base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("WireGuardPeer/%d", 700000+s.seq))),
		Org:       o.Slug,
		Name:      name,
		PublicKey: pub,
		Region:    reg,
		PeerIP:    peerAddr(prefix, slot),
		Network:   network,
		Created:   time.Now().UTC(),
	}
	if s.gw != nil {
		if err := s.gw.addPeer(p); err != nil {
			return nil, newGQLError("SERVER_ERROR", "unhandled upstream service error: gateway add peer: %v", err)
		}
	}
	o.peers[name] = p
	s.byKey[pub] = p
	return p, nil
}

func (s *Server) removePeerLocked(o *orgState, name string) error {
	p, ok := o.peers[name]
	if !ok {
		return newGQLError("NOT_FOUND", "Could not find WireGuardPeer")
	}
	if s.gw != nil {
		if err := s.gw.removePeer(p); err != nil {
			return newGQLError("SERVER_ERROR", "unhandled upstream service error: gateway delete peer: %v", err)
		}
	}
	delete(o.peers, name)
	delete(s.byKey, p.PublicKey)
	return nil
}
