// Command flydouble runs the Fly.io double (flyapi/flyapitest) for the local
// demo: a GraphQL API and a userspace WireGuard gateway, on loopback only.
//
// It prints one JSON line on stdout, e.g.
//
//	{"url":"http://127.0.0.1:40123","token":"FlyV1 fm2_…","gateway":"127.0.0.1:51820",...}
//
// and runs until SIGTERM or SIGINT. Point glaceon at it with
// FLY_API_BASE_URL=<url>, FLY_API_TOKEN=<token>, FLY_WG_GATEWAY_PORT=<gatewayPort>,
// and the sidecar also with FLY_WG_WEBSOCKET_PORT=<websocketPort>.
//
// The gateway serves WireGuard over WebSocket (TLS, self-signed) on
// 127.0.0.1:<websocketPort>. --block-udp starts it with UDP blocked (only
// WebSockets get through, like egress that allows TCP 443 alone); at run
// time SIGUSR1 blocks UDP and SIGUSR2 lets it through again.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
)

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

type orgOut struct {
	ID      string `json:"id"`
	Slug    string `json:"slug"`
	RawSlug string `json:"rawSlug"`
	Prefix  string `json:"prefix"`
	DNS     string `json:"dns"`
}

type out struct {
	URL         string            `json:"url"`
	Token       string            `json:"token"`
	UserToken   string            `json:"userToken"`
	Gateway     string            `json:"gateway"`
	GatewayHost string            `json:"gatewayHost"`
	GatewayPort int               `json:"gatewayPort"`
	GatewayKey  string            `json:"gatewayPublicKey"`
	WSPort      int               `json:"websocketPort"`
	UDPBlocked  bool              `json:"udpBlocked"`
	Region      string            `json:"region"`
	Orgs        []orgOut          `json:"orgs"`
	Apps        map[string]string `json:"apps"` // "<app>@<org>" -> flycast address
}

func main() {
	var (
		listen      = flag.String("listen", "127.0.0.1:0", "API listen address (loopback only)")
		gatewayPort = flag.Int("gateway-port", 0, "WireGuard gateway UDP port on 127.0.0.1/::1 (0 = $FLY_WG_GATEWAY_PORT or ephemeral)")
		wsPort      = flag.Int("websocket-port", 0, "WireGuard-over-WebSocket TLS port on 127.0.0.1 (0 = $FLY_WG_WEBSOCKET_PORT or ephemeral)")
		blockUDP    = flag.Bool("block-udp", false, "drop every WireGuard datagram that does not come through a WebSocket (SIGUSR1/SIGUSR2 switch it at run time)")
		gatewayHost = flag.String("gateway-host", "localhost", "host name returned as endpointip")
		token       = flag.String("token", "", "API token to accept (default: a random FlyV1 macaroon-shaped token)")
		region      = flag.String("region", "yyz", "nearest/default gateway region")
		pageSize    = flag.Int("page-size", 2, "default wireGuardPeers page size")
		verbose     = flag.Bool("v", false, "log requests to stderr")
		orgs, apps  listFlag
	)
	flag.Var(&orgs, "org", "org slug to serve (repeatable or comma-separated; default personal,acme)")
	flag.Var(&apps, "app", "app name served in every org network (repeatable or comma-separated; default twi-ollama,echo,db)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("flydouble: ")

	opts := flyapitest.Options{
		Apps:          apps,
		Token:         *token,
		PageSize:      *pageSize,
		GatewayHost:   *gatewayHost,
		GatewayPort:   *gatewayPort,
		WebSocketPort: *wsPort,
		Region:        *region,
		Listen:        *listen,
	}
	for i, slug := range orgs {
		typ := "SHARED"
		if i == 0 && slug == "personal" {
			typ = "PERSONAL"
		}
		opts.Orgs = append(opts.Orgs, flyapitest.Org{Slug: slug, Type: typ})
	}
	if *verbose {
		opts.Logf = log.Printf
	}
	s, err := flyapitest.NewServer(opts)
	if err != nil {
		log.Fatal(err)
	}

	s.BlockUDP(*blockUDP)
	o := out{
		URL: s.URL(), Token: s.Token(), UserToken: s.UserToken(),
		Gateway:     s.GatewayAddr().String(),
		GatewayHost: s.GatewayHost(), GatewayPort: s.GatewayPort(), GatewayKey: s.GatewayPublicKey(),
		WSPort: s.WebSocketPort(), UDPBlocked: s.UDPBlocked(),
		Region: s.Region(), Apps: map[string]string{},
	}
	for _, org := range s.Orgs() {
		o.Orgs = append(o.Orgs, orgOut{ID: org.ID, Slug: org.Slug, RawSlug: org.RawSlug,
			Prefix: s.OrgPrefix(org.Slug).String(), DNS: s.DNSAddr(org.Slug).String()})
		for _, app := range s.Apps() {
			o.Apps[app+"@"+org.Slug] = s.AppAddr(app, org.Slug).String()
		}
	}
	b, err := json.Marshal(o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	got := <-sig
	for got == syscall.SIGUSR1 || got == syscall.SIGUSR2 {
		s.BlockUDP(got == syscall.SIGUSR1)
		log.Printf("udp blocked: %v", s.UDPBlocked())
		got = <-sig
	}
	if *verbose {
		log.Printf("%v: shutting down", got)
	}
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}
}
