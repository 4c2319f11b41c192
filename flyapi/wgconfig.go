package flyapi

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// NewWireGuardConfig builds the config `fly wireguard create` would write for
// a peer created by AddPeer: Address peerip/120, DNS prefix48::3, AllowedIPs
// prefix48::/48, Endpoint JoinHostPort(endpoint host, port), keepalive 15.
// gatewayPort 0 means wgquick.DefaultGatewayPort.
func NewWireGuardConfig(private wgquick.Key, peer CreatedPeer, gatewayPort int) (*wgquick.Config, error) {
	if gatewayPort == 0 {
		gatewayPort = wgquick.DefaultGatewayPort
	}
	if gatewayPort < 1 || gatewayPort > 65535 {
		return nil, fmt.Errorf("wireguard config: gateway port %d out of range: use 1..65535 (or 0 for %d)", gatewayPort, wgquick.DefaultGatewayPort)
	}
	if private.IsZero() {
		return nil, fmt.Errorf("wireguard config: private key is empty: generate one with wgquick.GenerateKeyPair")
	}
	if !peer.PeerIP.Is6() || peer.PeerIP.Is4In6() {
		return nil, fmt.Errorf("wireguard config: peer IP %q is not an IPv6 address: Fly peer IPs are 6PN addresses in fdaa::/16", peer.PeerIP)
	}
	if err := wgquick.ValidateEndpointHost(peer.EndpointHost); err != nil {
		return nil, fmt.Errorf("wireguard config: endpoint host: %w", err)
	}
	c := &wgquick.Config{
		PrivateKey:          private,
		Address:             peer.PeerIP.WithZone(""),
		DNS:                 wgquick.DNSServerFor(peer.PeerIP),
		PeerPublicKey:       peer.GatewayPublicKey,
		AllowedIPs:          []netip.Prefix{wgquick.Prefix48(peer.PeerIP)},
		Endpoint:            net.JoinHostPort(strings.Trim(peer.EndpointHost, "[]"), strconv.Itoa(gatewayPort)),
		PersistentKeepalive: wgquick.DefaultKeepalive,
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
