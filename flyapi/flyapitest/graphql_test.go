package flyapitest

import (
	"strings"
	"testing"
)

func TestParseDocument(t *testing.T) {
	cases := []struct {
		doc    string
		op     string // operation name to pick
		fields []string
		ok     bool
	}{
		{`query($slug: String!) { organization(slug: $slug) { id } }`, "", []string{"organization"}, true},
		{`{ nearestRegion(wireguardGateway: true) { code } }`, "", []string{"nearestRegion"}, true},
		{"mutation  ( $input :AddWireGuardPeerInput! )\n{\taddWireGuardPeer(input:$input){peerip,endpointip,pubkey}}", "", []string{"addWireGuardPeer"}, true},
		{`mutation M { a: removeWireGuardPeer(input: {organizationId: "x", name: "y", list: [1, 2.5e3, -3, null, ENUM, """block "quoted" """]}) { organization { id } } }`, "", []string{"removeWireGuardPeer"}, true},
		{`query A { platform { requestRegion } } query B { organizations { nodes { id } } }`, "B", []string{"organizations"}, true},
		{`query A { platform { requestRegion } } query B { organizations { nodes { id } } }`, "", nil, false},
		{`query { organization(slug: "x") { id }`, "", nil, false},
		{`query { organization(slug: "unterminated) { id } }`, "", nil, false},
		{`fragment F on Organization { id }`, "", nil, false},
		{`# only a comment`, "", nil, false},
		{"query { a(s: \"\\u00e9\\n\") { b @include(if: true) ... on X { c } ...F } } fragment F on X { d }", "", []string{"a"}, true},
		{strings.Repeat("{ a ", 100) + strings.Repeat("}", 100), "", nil, false},
	}
	for _, c := range cases {
		doc, err := parseDocument(c.doc)
		var op *gqlOperation
		if err == nil {
			op, err = doc.pickOperation(c.op)
		}
		if (err == nil) != c.ok {
			t.Errorf("%q: err = %v, want ok=%v", c.doc, err, c.ok)
			continue
		}
		if err != nil {
			continue
		}
		var got []string
		for _, s := range op.sel {
			got = append(got, s.name)
		}
		if strings.Join(got, ",") != strings.Join(c.fields, ",") {
			t.Errorf("%q: fields %v, want %v", c.doc, got, c.fields)
		}
	}
}

func TestStringEscapes(t *testing.T) {
	doc, err := parseDocument(`{ f(a: "x\"y\\z\u0041", b: """  line1
    line2  """) }`)
	if err != nil {
		t.Fatal(err)
	}
	args := resolveArgs(doc.ops[0].sel[0].args, nil)
	if args["a"] != `x"y\zA` {
		t.Errorf("a = %q", args["a"])
	}
	if !strings.Contains(args["b"].(string), "line2") {
		t.Errorf("b = %q", args["b"])
	}
}

func FuzzParseDocument(f *testing.F) {
	f.Add(`query($slug: String!) { organization(slug: $slug) { wireGuardPeers(first: 2, after: "x") { nodes { id } pageInfo { hasNextPage endCursor } } } }`)
	f.Add(`mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip endpointip pubkey } }`)
	f.Add(`{ a: b(c: [1, {d: $e}], f: """g""") @skip(if: false) { ...H ... on I { j } } } fragment H on I { k }`)
	f.Fuzz(func(t *testing.T, src string) {
		doc, err := parseDocument(src)
		if err != nil {
			return
		}
		for _, op := range doc.ops {
			// projecting over an arbitrary object must not panic either
			root := &obj{typ: "Query", fields: map[string]any{}}
			_, _ = doc.project(root, op.sel, map[string]any{}, nil)
		}
	})
}
