package flyapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode"
)

// normalizeErrors is every message NormalizeToken can return: errors are
// constants, so they cannot contain the token.
var normalizeErrors = map[string]bool{}

func init() {
	for _, in := range []string{"", "a\x00", "a b", "a,flyv1"} {
		_, err := NormalizeToken(in)
		normalizeErrors[err.Error()] = true
	}
}

func FuzzNormalizeToken(f *testing.F) {
	for _, s := range []string{"foobar", "Bearer foobar", "FlyV1 foobar", "Bearer FlyV1 foobar", "BEARER FLYV1 foobar",
		"fm2_foobar,foobar", "foobar,fm2_foobar", "FlyV1 fm2_foobar, ,foobar,", "fm1r_a,fm1a_b", "  ", ",", "FlyV1",
		"FlyV1 fm2_lJPE+/a=,fm2_xyz==", "fo1_abc\n", "Bearer\tx", "x,Bearer", "fm2_a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizeToken(in)
		if err != nil {
			if !normalizeErrors[err.Error()] {
				t.Fatalf("unexpected (possibly leaking) error message %q", err)
			}
			return
		}
		scheme, rest, ok := strings.Cut(out, " ")
		if !ok || (scheme != "FlyV1" && scheme != "Bearer") || rest == "" {
			t.Fatalf("bad header %q", out)
		}
		hasMacaroon := false
		userSeen := false
		for _, seg := range strings.Split(rest, ",") {
			if seg == "" || strings.TrimSpace(seg) != seg {
				t.Fatalf("bad segment %q in %q", seg, out)
			}
			pfx, _, _ := strings.Cut(seg, "_")
			mac := pfx == "fm1r" || pfx == "fm1a" || pfx == "fm2"
			if mac && userSeen {
				t.Fatalf("macaroon after user token in %q", out)
			}
			userSeen = userSeen || !mac
			hasMacaroon = hasMacaroon || mac
			if !strings.Contains(in, seg) {
				t.Fatalf("segment %q not from the input", seg)
			}
		}
		if (scheme == "FlyV1") != hasMacaroon {
			t.Fatalf("scheme %q with macaroons=%v", scheme, hasMacaroon)
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in header %q", out)
			}
		}
		again, err := NormalizeToken(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q -> %q (%v)", out, again, err)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	seeds := []struct {
		status int
		body   string
	}{
		{200, `{"data":{"organization":{"id":"T3JnOjE=","slug":"acme","rawSlug":"acme","name":"Acme","type":"SHARED"}}}`},
		{200, `{"data":{"addWireGuardPeer":{"peerip":"fdaa:0:18:a7b:d6b:0:a:2","endpointip":"ord1.gateway.6pn.dev","pubkey":"` + testGWKey + `"}}}`},
		{200, `{"data":{"organization":{"wireGuardPeers":{"nodes":[null,{"id":"1","name":"a","pubkey":"k","region":"ord","peerip":"fdaa::2","network":null}],"pageInfo":{"hasNextPage":true,"endCursor":"c1"}}}}}`},
		{200, `{"data":{"validateWireGuardPeers":{"invalidPeerIps":["fdaa::3"]}}}`},
		{200, `{"data":null,"errors":[{"message":"Could not find App","path":["app",0],"extensions":{"code":"NOT_FOUND"}}]}`},
		{200, `{"errors":"x"}`},
		{200, `{"errors":[1,"two",{"message":3,"path":{"a":1},"extensions":[]}]}`},
		{401, ``},
		{429, `{"errors":[{"message":"slow down"}]}`},
		{502, `<html>Bad Gateway</html>`},
		{200, `[]`},
		{200, `{"data":"str"}`},
	}
	for _, s := range seeds {
		f.Add(s.status, "application/json", "3", []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, contentType, retryAfter string, body []byte) {
		h := http.Header{}
		h.Set("Content-Type", contentType)
		h.Set("Retry-After", retryAfter)
		data, apiErr := decodeResponse(status, h, body)
		if apiErr != nil {
			if data != nil {
				t.Fatal("both data and error")
			}
			msg := apiErr.Error()
			for _, r := range msg {
				if r != ' ' && unicode.IsControl(r) {
					t.Fatalf("control character in error %q", msg)
				}
			}
			if apiErr.RetryAfter < 0 {
				t.Fatalf("negative RetryAfter")
			}
			if status != 200 && apiErr.HTTPStatus != status {
				t.Fatalf("status %d lost", status)
			}
			return
		}
		if status != 200 || isNull(data) {
			t.Fatalf("status %d / data %q accepted", status, data)
		}
		// Every operation's decoder must cope with whatever data holds.
		_, _ = decodeAddPeer(data)
		var page peersPage
		_ = decodeData(OpListPeers, data, &page)
		var anyv any
		if err := json.Unmarshal(data, &anyv); err != nil {
			t.Fatalf("data is not valid JSON: %v", err)
		}
	})
}

// FuzzPeerLookup: whatever the API answers to organization.wireGuardPeer,
// the client never panics, never calls a missing organization a missing
// peer (or both), and never returns a peer of another name.
func FuzzPeerLookup(f *testing.F) {
	for _, body := range []string{
		`{"data":{"organization":{"wireGuardPeer":{"id":"1","name":"k8s-a","pubkey":"k","region":"ord","peerip":"fdaa::2","network":null}}}}`,
		`{"data":{"organization":null},"errors":[{"message":"Could not find WireGuardPeer","path":["organization","wireGuardPeer"],"extensions":{"code":"NOT_FOUND"}}]}`,
		`{"data":{"organization":null}}`,
		`{"data":{"organization":{"wireGuardPeer":null}}}`,
		`{"data":null,"errors":[{"message":"Could not find Organization","path":["organization"]}]}`,
		`{"data":null,"errors":[{"message":"Not found","path":["organization","wireGuardPeer",3],"extensions":{"code":"NOT_FOUND"}}]}`,
		`{"data":null,"errors":[{"message":"not found","extensions":{"code":"NOT_FOUND"}}]}`,
		`{"data":{"organization":{"wireGuardPeer":{"name":"other"}}}}`,
		`{"data":{"organization":{"wireGuardPeer":"x"}}}`,
	} {
		f.Add(200, []byte(body), "k8s-a")
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, name string) {
		var (
			p   *Peer
			err error
		)
		data, apiErr := decodeResponse(status, http.Header{}, body)
		if apiErr != nil {
			apiErr.Op = OpPeer
			err = notFoundDetail(apiErr, "acme", name)
		} else {
			p, err = decodePeer(data, "acme", name)
		}
		if IsPeerNotFound(err) && IsOrgNotFound(err) {
			t.Fatalf("both peer and org not found: %v", err)
		}
		if (p == nil) == (err == nil) {
			t.Fatalf("peer %v with error %v", p, err)
		}
		if p != nil && p.Name != name {
			t.Fatalf("asked for %q, got %q", name, p.Name)
		}
		if err != nil {
			_ = err.Error()
		}
	})
}

// FuzzNotFoundObject: the classification of a not-found error is total and
// only ever names one of the two objects.
func FuzzNotFoundObject(f *testing.F) {
	f.Add("Could not find WireGuardPeer", "organization", "wireGuardPeer")
	f.Add("Could not find Organization", "removeWireGuardPeer", "")
	f.Add("Not found", "", "")
	f.Fuzz(func(t *testing.T, msg, p1, p2 string) {
		var path []any
		for _, p := range []string{p1, p2} {
			if p != "" {
				path = append(path, p)
			}
		}
		switch o := notFoundObjectOf(msg, path); o {
		case "", ObjectOrganization, ObjectWireGuardPeer:
		default:
			t.Fatalf("object %q", o)
		}
	})
}
