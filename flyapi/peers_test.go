package flyapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/glaceon/glaceon/flyapi/wgquick"
)

func testAddInput(t *testing.T, f *fakeFly) (AddPeerInput, wgquick.KeyPair) {
	t.Helper()
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return AddPeerInput{Org: f.orgs["acme"], Name: "k8s-default-web-abc12", PublicKey: kp.Public, Region: "ord"}, kp
}

func TestAddPeer(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	in, kp := testAddInput(t, f)
	created, err := c.AddPeer(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != in.Name || created.EndpointHost != testEndpoint || created.GatewayPublicKey.String() != testGWKey ||
		created.PeerIP.String() != "fdaa:0:18:a7b:d6b:0:a:102" {
		t.Fatalf("created = %+v", created)
	}
	reqs := f.recorded()
	input, _ := reqs[0].Variables["input"].(map[string]any)
	if input["organizationId"] != in.Org.ID || input["name"] != in.Name || input["pubkey"] != kp.Public.String() || input["region"] != "ord" {
		t.Fatalf("input = %v", input)
	}
	if _, ok := input["network"]; ok {
		t.Fatal("empty network must not be sent")
	}
	cfg, err := NewWireGuardConfig(kp.Private, *created, c.GatewayPort())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoint != testEndpoint+":51820" || cfg.DNS.String() != "fdaa:0:18::3" {
		t.Fatalf("cfg %v", cfg)
	}
	if f.count("listPeers") != 0 {
		t.Fatal("a clean create must not list")
	}
}

func TestAddPeerLooksUpOrgBySlug(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	in, _ := testAddInput(t, f)
	in.Org = Organization{Slug: "acme"}
	in.Network = "custom-net"
	if _, err := c.AddPeer(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	reqs := f.recorded()
	input, _ := reqs[1].Variables["input"].(map[string]any)
	if input["organizationId"] != "T3JnOjE=" || input["network"] != "custom-net" {
		t.Fatalf("input %v", input)
	}
}

func TestAddPeerInputValidation(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	tests := []struct {
		name string
		mod  func(*AddPeerInput)
		want string
	}{
		{"empty name", func(in *AddPeerInput) { in.Name = "" }, "empty"},
		{"upper case", func(in *AddPeerInput) { in.Name = "K8s-web" }, "invalid character"},
		{"underscore", func(in *AddPeerInput) { in.Name = "k8s_web" }, "invalid character"},
		{"too long", func(in *AddPeerInput) { in.Name = strings.Repeat("a", 64) }, "more than 63"},
		{"interactive prefix", func(in *AddPeerInput) { in.Name = "interactive-abc" }, "interactive-"},
		{"leading dash", func(in *AddPeerInput) { in.Name = "-abc" }, "start or end"},
		{"zero key", func(in *AddPeerInput) { in.PublicKey = wgquick.Key{} }, "public key is empty"},
		{"bad region", func(in *AddPeerInput) { in.Region = "ORD" }, "region"},
		{"bad network", func(in *AddPeerInput) { in.Network = "1net" }, "start with a letter"},
		{"no org", func(in *AddPeerInput) { in.Org = Organization{} }, "organization ID and slug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := testAddInput(t, f)
			tt.mod(&in)
			_, err := c.AddPeer(context.Background(), in)
			if !IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want invalid %q", err, tt.want)
			}
		})
	}
	if n := len(f.recorded()); n != 0 {
		t.Fatalf("%d requests sent for invalid input", n)
	}
	if err := ValidatePeerName(strings.Repeat("a", 63)); err != nil {
		t.Fatal(err)
	}
}

func TestAddPeerResponseValidation(t *testing.T) {
	tests := []struct {
		name, body, field string
	}{
		{"bad peerip", `{"data":{"addWireGuardPeer":{"peerip":"nope","endpointip":"ord1.gateway.6pn.dev","pubkey":"` + testGWKey + `"}}}`, "peerip"},
		{"ipv4 peerip", `{"data":{"addWireGuardPeer":{"peerip":"10.0.0.2","endpointip":"ord1.gateway.6pn.dev","pubkey":"` + testGWKey + `"}}}`, "peerip"},
		{"33-byte pubkey", `{"data":{"addWireGuardPeer":{"peerip":"fdaa::2","endpointip":"ord1.gateway.6pn.dev","pubkey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}}`, "pubkey"},
		{"empty endpoint", `{"data":{"addWireGuardPeer":{"peerip":"fdaa::2","endpointip":"","pubkey":"` + testGWKey + `"}}}`, "endpointip"},
		{"endpoint with port", `{"data":{"addWireGuardPeer":{"peerip":"fdaa::2","endpointip":"ord1.gateway.6pn.dev:51820","pubkey":"` + testGWKey + `"}}}`, "endpointip"},
		{"missing fields", `{"data":{"addWireGuardPeer":{"peerip":"fdaa::2"}}}`, "missing endpointip, pubkey"},
		{"wrong type", `{"data":{"addWireGuardPeer":{"peerip":["fdaa::2"]}}}`, "peerip"},
		{"null payload", `{"data":{"addWireGuardPeer":null}}`, "addWireGuardPeer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFly(t)
			c := f.client(t)
			in, _ := testAddInput(t, f)
			f.inject("addWireGuardPeer", fault{apply: true, body: tt.body})
			_, err := c.AddPeer(context.Background(), in)
			var e *Error
			if !errors.As(err, &e) || e.Op != OpAddPeer || !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), "invalid response") {
				t.Fatalf("err = %v, want invalid response naming %q", err, tt.field)
			}
			if names := f.peerNames(); len(names) != 0 {
				t.Fatalf("peer created with an unusable response was left behind: %v", names)
			}
		})
	}
}

func TestAddPeerReconcile(t *testing.T) {
	ctx := context.Background()
	t.Run("ambiguous failure, peer absent: create again", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{status: 502}) // not applied
		created, err := c.AddPeer(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if f.count("addWireGuardPeer") != 2 || f.count("getPeer") != 1 || f.count("removeWireGuardPeer") != 0 {
			t.Fatalf("add %d lookup %d remove %d", f.count("addWireGuardPeer"), f.count("getPeer"), f.count("removeWireGuardPeer"))
		}
		if created.Name != in.Name || len(f.peerNames()) != 1 {
			t.Fatalf("created %+v peers %v", created, f.peerNames())
		}
	})
	t.Run("applied but response lost: remove and create again", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{apply: true, status: 504})
		created, err := c.AddPeer(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if f.count("addWireGuardPeer") != 2 || f.count("removeWireGuardPeer") != 1 {
			t.Fatalf("add %d remove %d", f.count("addWireGuardPeer"), f.count("removeWireGuardPeer"))
		}
		if names := f.peerNames(); len(names) != 1 || names[0] != in.Name {
			t.Fatalf("peers %v", names)
		}
		if created.GatewayPublicKey.String() != testGWKey {
			t.Fatalf("created %+v", created)
		}
	})
	t.Run("lost twice gives up", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{apply: true, status: 502}, fault{apply: true, status: 502})
		_, err := c.AddPeer(ctx, in)
		if err == nil || !strings.Contains(err.Error(), "both responses were lost") || !IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("same name, other key: conflict", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.addPeerState(in.Name, testGWKey)
		_, err := c.AddPeer(ctx, in)
		if !IsConflict(err) || !strings.Contains(err.Error(), in.Name) || !strings.Contains(err.Error(), "different public key") {
			t.Fatalf("err = %v", err)
		}
		if f.count("removeWireGuardPeer") != 0 {
			t.Fatal("someone else's peer was removed")
		}
	})
	t.Run("ambiguous failure, other key present: conflict", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.addPeerState(in.Name, testGWKey)
		f.inject("addWireGuardPeer", fault{status: 500})
		_, err := c.AddPeer(ctx, in)
		if !IsConflict(err) || f.count("removeWireGuardPeer") != 0 || f.count("addWireGuardPeer") != 1 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("duplicate error for our own key: lost response", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.addPeerState(in.Name, in.PublicKey.String())
		created, err := c.AddPeer(ctx, in)
		if err != nil || created == nil || f.count("removeWireGuardPeer") != 1 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("duplicate error, name not listed: conflict", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{body: `{"errors":[{"message":"Name has already been taken"}]}`})
		_, err := c.AddPeer(ctx, in)
		if !IsConflict(err) || !strings.Contains(err.Error(), "not found by name yet") || f.count("addWireGuardPeer") != 1 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("duplicate error, listing fails: conflict", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) { o.MaxRetries = -1 })
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{body: `{"errors":[{"message":"Name has already been taken"}]}`})
		f.inject("getPeer", fault{status: 500})
		_, err := c.AddPeer(ctx, in)
		if !IsConflict(err) || !strings.Contains(err.Error(), "looking the peer up to compare public keys failed") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("rate limit is retried without listing", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		recordSleeps(c)
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{status: 429, headers: map[string]string{"Retry-After": "1"}})
		if _, err := c.AddPeer(ctx, in); err != nil {
			t.Fatal(err)
		}
		if f.count("addWireGuardPeer") != 2 || f.count("getPeer") != 0 {
			t.Fatalf("add %d lookup %d", f.count("addWireGuardPeer"), f.count("getPeer"))
		}
	})
	t.Run("ambiguous failure and listing fails", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) { o.MaxRetries = -1 })
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{status: 502})
		f.inject("getPeer", fault{status: 503})
		_, err := c.AddPeer(ctx, in)
		if !IsTransient(err) || !strings.Contains(err.Error(), "looking the peer up to check failed") || f.count("addWireGuardPeer") != 1 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("ambiguous failures exhaust retries", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) { o.MaxRetries = 2 })
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{status: 502}, fault{status: 502}, fault{status: 502}, fault{status: 502})
		_, err := c.AddPeer(ctx, in)
		if !IsTransient(err) || f.count("addWireGuardPeer") != 3 {
			t.Fatalf("err %v after %d adds", err, f.count("addWireGuardPeer"))
		}
	})
	t.Run("timeout is ambiguous", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) {
			o.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond}
		})
		in, _ := testAddInput(t, f)
		f.inject("addWireGuardPeer", fault{hang: true})
		if _, err := c.AddPeer(ctx, in); err != nil {
			t.Fatal(err)
		}
		if f.count("addWireGuardPeer") != 2 || f.count("getPeer") != 1 {
			t.Fatalf("add %d lookup %d", f.count("addWireGuardPeer"), f.count("getPeer"))
		}
	})
}

func TestRemovePeer(t *testing.T) {
	ctx := context.Background()
	t.Run("present: removed, confirmed by one lookup, never listed", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.addPeerState("k8s-a", testGWKey)
		f.addPeerState("k8s-b", testGWKey)
		if err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a"); err != nil {
			t.Fatal(err)
		}
		if names := f.peerNames(); len(names) != 1 || names[0] != "k8s-b" {
			t.Fatalf("peers %v", names)
		}
		if f.count("removeWireGuardPeer") != 1 || f.count("getPeer") != 1 || f.count("listPeers") != 0 {
			t.Fatalf("remove %d lookup %d list %d", f.count("removeWireGuardPeer"), f.count("getPeer"), f.count("listPeers"))
		}
	})
	t.Run("absent: Could not find WireGuardPeer is success", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		if err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-gone"); err != nil {
			t.Fatal(err)
		}
		if f.count("removeWireGuardPeer") != 1 || f.count("getPeer") != 0 || f.count("listPeers") != 0 {
			t.Fatalf("remove %d lookup %d list %d", f.count("removeWireGuardPeer"), f.count("getPeer"), f.count("listPeers"))
		}
	})
	t.Run("no slug: peer not-found error is success", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		if err := c.RemovePeer(ctx, Organization{ID: "T3JnOjE="}, "k8s-gone"); err != nil {
			t.Fatal(err)
		}
		if f.count("removeWireGuardPeer") != 1 || f.count("listPeers") != 0 {
			t.Fatal("expected a direct removal")
		}
	})
	t.Run("organization not found is an error, not already removed", func(t *testing.T) {
		for name, body := range map[string]string{
			"message":       `{"data":null,"errors":[{"message":"Could not find Organization","path":["removeWireGuardPeer"]}]}`,
			"code and path": `{"data":{"removeWireGuardPeer":null},"errors":[{"message":"Not found","path":["removeWireGuardPeer","organization"],"extensions":{"code":"NOT_FOUND"}}]}`,
		} {
			t.Run(name, func(t *testing.T) {
				f := newFakeFly(t)
				c := f.client(t)
				f.addPeerState("k8s-a", testGWKey)
				f.inject("removeWireGuardPeer", fault{body: body})
				err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a")
				if !IsOrgNotFound(err) || IsPeerNotFound(err) || !strings.Contains(err.Error(), "not removed") {
					t.Fatalf("err = %v", err)
				}
				if len(f.peerNames()) != 1 {
					t.Fatal("peer gone")
				}
			})
		}
	})
	t.Run("untyped not found: the lookup decides", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.addPeerState("k8s-a", testGWKey)
		f.inject("removeWireGuardPeer", fault{body: `{"data":null,"errors":[{"message":"Not found","extensions":{"code":"NOT_FOUND"}}]}`})
		err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a")
		if !IsNotFound(err) || IsPeerNotFound(err) {
			t.Fatalf("peer still there, err = %v", err)
		}
		f.removeAll()
		f.inject("removeWireGuardPeer", fault{body: `{"data":null,"errors":[{"message":"Not found","extensions":{"code":"NOT_FOUND"}}]}`})
		if err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a"); err != nil {
			t.Fatalf("peer gone, err = %v", err)
		}
		if err := c.RemovePeer(ctx, Organization{ID: f.orgs["acme"].ID}, "k8s-a"); err != nil {
			t.Fatalf("typed, no slug: %v", err)
		}
	})
	t.Run("slug only: org looked up once", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.addPeerState("k8s-a", testGWKey)
		f.addPeerState("k8s-b", testGWKey)
		for _, n := range []string{"k8s-a", "k8s-b"} {
			if err := c.RemovePeer(ctx, Organization{Slug: "acme"}, n); err != nil {
				t.Fatal(err)
			}
		}
		if len(f.peerNames()) != 0 || f.count("organization") != 1 {
			t.Fatalf("peers %v, %d org lookups", f.peerNames(), f.count("organization"))
		}
	})
	t.Run("transient failure is retried", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.addPeerState("k8s-a", testGWKey)
		f.inject("removeWireGuardPeer", fault{apply: true, status: 502})
		if err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a"); err != nil {
			t.Fatal(err)
		}
		if f.count("removeWireGuardPeer") != 2 || len(f.peerNames()) != 0 {
			t.Fatalf("remove %d", f.count("removeWireGuardPeer"))
		}
	})
	t.Run("still present after removal", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.addPeerState("k8s-a", testGWKey)
		f.inject("removeWireGuardPeer", fault{body: `{"data":{"removeWireGuardPeer":{"organization":{"id":"x"}}}}`})
		err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a")
		if !IsTransient(err) || !strings.Contains(err.Error(), "still present") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unauthorized explains token types", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.addPeerState("k8s-a", testGWKey)
		f.inject("removeWireGuardPeer", fault{body: `{"errors":[{"message":"Not authorized","extensions":{"code":"UNAUTHORIZED"}}]}`})
		err := c.RemovePeer(ctx, f.orgs["acme"], "k8s-a")
		if !IsUnauthorized(err) || !strings.Contains(err.Error(), "SSH tokens") || f.count("removeWireGuardPeer") != 1 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("invalid name", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		if err := c.RemovePeer(ctx, f.orgs["acme"], "a b"); !IsInvalid(err) {
			t.Fatalf("err = %v", err)
		}
		if err := c.RemovePeer(ctx, Organization{}, "a"); !IsInvalid(err) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestPeerLookup(t *testing.T) {
	ctx := context.Background()
	f := newFakeFly(t)
	c := f.client(t)
	f.addPeerState("k8s-a", testGWKey)
	p, err := c.Peer(ctx, "acme", "k8s-a")
	if err != nil || p.Name != "k8s-a" || p.PublicKey != testGWKey {
		t.Fatalf("Peer = %+v, %v", p, err)
	}
	if _, err := c.Peer(ctx, "acme", "k8s-nope"); !IsPeerNotFound(err) || IsOrgNotFound(err) || !strings.Contains(err.Error(), `peer "k8s-nope" not found in organization "acme"`) {
		t.Fatalf("missing peer: %v", err)
	}
	if _, err := c.Peer(ctx, "nope", "k8s-a"); !IsOrgNotFound(err) || IsPeerNotFound(err) {
		t.Fatalf("missing org: %v", err)
	}
	if f.count("getPeer") != 3 || f.count("listPeers") != 0 {
		t.Fatalf("lookup %d list %d", f.count("getPeer"), f.count("listPeers"))
	}
	for name, body := range map[string]string{
		"wrong name":       `{"data":{"organization":{"wireGuardPeer":{"id":"x","name":"other","pubkey":"k","region":"ord","peerip":"fdaa::2"}}}}`,
		"bad shape":        `{"data":{"organization":{"wireGuardPeer":[]}}}`,
		"untyped notfound": `{"data":null,"errors":[{"message":"not found","extensions":{"code":"NOT_FOUND"}}]}`,
	} {
		f.inject("getPeer", fault{body: body})
		_, err := c.Peer(ctx, "acme", "k8s-a")
		if err == nil || IsPeerNotFound(err) || IsOrgNotFound(err) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	f.inject("getPeer", fault{body: `{"data":{"organization":{"wireGuardPeer":null}}}`})
	if _, err := c.Peer(ctx, "acme", "k8s-a"); !IsPeerNotFound(err) {
		t.Errorf("null peer: %v", err)
	}
	if _, err := c.Peer(ctx, "acme", "a b"); !IsInvalid(err) {
		t.Errorf("bad name: %v", err)
	}
}

func TestValidatePeers(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	f.addPeerState("a", testGWKey)
	valid := f.peers[0].PeerIP
	invalid, err := c.ValidatePeers(context.Background(), []string{valid, "fdaa::dead"})
	if err != nil {
		t.Fatal(err)
	}
	if len(invalid) != 1 || invalid[0] != "fdaa::dead" {
		t.Fatalf("invalid = %v", invalid)
	}
	if got, err := c.ValidatePeers(context.Background(), nil); err != nil || got != nil || f.count("validateWireGuardPeers") != 1 {
		t.Fatal("empty input must not call the API")
	}
	if _, err := c.ValidatePeers(context.Background(), []string{"nope"}); !IsInvalid(err) {
		t.Fatalf("err = %v", err)
	}
	f.inject("validateWireGuardPeers", fault{body: `{"data":{"validateWireGuardPeers":{}}}`})
	if _, err := c.ValidatePeers(context.Background(), []string{valid}); err == nil || !strings.Contains(err.Error(), "invalidPeerIps") {
		t.Fatalf("err = %v", err)
	}
}
