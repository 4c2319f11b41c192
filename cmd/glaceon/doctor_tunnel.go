package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/target"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/sidecar"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/doctor"
)

// Names of the tunnel checks.
const (
	groupTunnel        = "tunnel"
	checkTunnelPeer    = "tunnel-peer"
	checkTunnelReady   = "tunnel-handshake-dns"
	checkTunnelTarget  = "tunnel-target"
	checkTunnelRemoved = "tunnel-peer-removed"
)

// tunnelOptions are doctor's --tunnel flags.
type tunnelOptions struct {
	org, region, transport string
	// target, if set, is dialled through the tunnel once it is ready.
	target *target.Target
	// timeout bounds the wait for a handshake and Fly DNS.
	timeout time.Duration
}

// checkTunnel runs the tunnel group from this process: a temporary Fly
// peer made with FLY_API_TOKEN (as `glaceon peer` does; doctor never reads
// a FlyOrg's token Secret), the sidecar's own tunnel up to a WireGuard
// handshake and an answer of Fly DNS (_api.internal) through it, and the
// peer removed again on every path out, Ctrl-C included.
func checkTunnel(ctx context.Context, c client.Client, to tunnelOptions) (out []doctor.Result) {
	fail := func(check, msg, cause, fix string) doctor.Result {
		return doctor.Result{Group: groupTunnel, Check: check, Status: doctor.Fail, Message: msg, Cause: cause, Fix: fix}
	}
	slug := to.org
	if slug == "" {
		var orgs glaceonv1alpha1.FlyOrgList
		if err := c.List(ctx, &orgs); err == nil {
			for i := range orgs.Items {
				if orgs.Items[i].IsDefault() {
					slug = orgs.Items[i].SlugOrName()
				}
			}
		}
		if slug == "" {
			return []doctor.Result{fail(checkTunnelPeer, "no org for the temporary peer", "no --org and no default FlyOrg", "pass --org SLUG")}
		}
	}
	fly, opts, o, err := connectOrg(ctx, slug)
	if err != nil {
		return []doctor.Result{fail(checkTunnelPeer, fmt.Sprintf("cannot use Fly org %s for the temporary peer", slug), err.Error(),
			"export FLY_API_TOKEN with a token of that org (`fly tokens create org`); doctor does not read the FlyOrg's Secret")}
	}
	region := to.region
	if region == "" {
		if region, err = fly.NearestGatewayRegion(ctx); err != nil {
			return []doctor.Result{fail(checkTunnelPeer, "cannot find the nearest gateway region", explainFlyError(err, opts, slug).Error(), "pass --region")}
		}
	}
	keys, err := wgquick.GenerateKeyPair()
	if err != nil {
		return []doctor.Result{fail(checkTunnelPeer, "cannot generate a key pair", err.Error(), "retry")}
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "glaceon-doctor-" + hex.EncodeToString(suffix)
	created, err := fly.AddPeer(ctx, flyapi.AddPeerInput{Org: *o, Name: name, PublicKey: keys.Public, Region: region})
	if err != nil {
		return []doctor.Result{fail(checkTunnelPeer, "cannot create a temporary peer", explainFlyError(err, opts, slug).Error(),
			"the token must be allowed to manage WireGuard peers (`fly tokens create org`)")}
	}
	out = []doctor.Result{{Group: groupTunnel, Check: checkTunnelPeer, Status: doctor.OK,
		Message: fmt.Sprintf("temporary peer %s in %s (region %s, address %s)", name, slug, region, created.PeerIP)}}
	defer func() {
		// Removed whatever happened, also after Ctrl-C cancelled ctx.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), peerTimeout)
		defer cancel()
		if err := fly.RemovePeer(rctx, *o, name); err != nil {
			out = append(out, fail(checkTunnelRemoved, "the temporary peer was not removed", err.Error(),
				fmt.Sprintf("`glaceon peer remove --org %s --name %s`", slug, name)))
			return
		}
		out = append(out, doctor.Result{Group: groupTunnel, Check: checkTunnelRemoved, Status: doctor.OK, Message: "temporary peer " + name + " removed"})
	}()
	out = append(out, runTunnel(ctx, keys, created, opts, to, region)...)
	return out
}

// runTunnel brings the sidecar's tunnel up in this process until it is
// ready (handshake and Fly DNS) or to.timeout passes, then dials
// to.target through it.
func runTunnel(ctx context.Context, keys wgquick.KeyPair, created *flyapi.CreatedPeer, opts flyapi.Options, to tunnelOptions, region string) []doctor.Result {
	fail := func(msg, cause, fix string) []doctor.Result {
		return []doctor.Result{{Group: groupTunnel, Check: checkTunnelReady, Status: doctor.Fail, Message: msg, Cause: cause, Fix: fix}}
	}
	cfg, err := flyapi.NewWireGuardConfig(keys.Private, *created, opts.GatewayPort)
	if err != nil {
		return fail("the Fly API returned an unusable peer", err.Error(), "retry; report it if it persists")
	}
	// The command line wants a forward; the check needs none (readiness is
	// the handshake and Fly DNS), so it is dropped before anything listens.
	sopts, err := sidecar.ParseOptions([]string{"--wg-config", "-", "--forward", "127.0.0.1:1=glaceon-doctor.internal:53",
		"--health-addr", "127.0.0.1:2", "--transport", to.transport, "--shutdown-grace", "1s"}, os.Getenv)
	if err != nil {
		return fail("invalid tunnel options", err.Error(), "--tunnel-transport is auto, udp or websocket; unset GLACEON_* variables meant for a sidecar")
	}
	sopts.Forwards = nil
	// Any free loopback port: /readyz is read by this process only.
	sopts.HealthAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	s, err := sidecar.New(sopts, cfg, logr.Discard())
	if err != nil {
		return fail("cannot build the tunnel", err.Error(), "retry")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	readyz := func() string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.HealthAddr()+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return strings.TrimSpace(string(b))
	}
	deadline := time.NewTimer(to.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !s.Ready() {
		select {
		case <-ctx.Done():
			return fail("interrupted before the tunnel was ready", ctx.Err().Error(), "")
		case err := <-done:
			done <- err
			return fail("the tunnel stopped", fmt.Sprint(err), "retry")
		case <-deadline.C:
			return fail(fmt.Sprintf("no handshake or no Fly DNS through the tunnel within %s (gateway %s, region %s)", to.timeout, cfg.Endpoint, region),
				readyz(),
				"UDP 51820 and TCP 443 to the gateway are blocked from here, or the peer is not yet known to the gateway; with --tunnel-transport udp try auto; behind a proxy set HTTPS_PROXY")
		case <-tick.C:
		}
	}
	status := readyz()
	ready := doctor.Result{Group: groupTunnel, Check: checkTunnelReady, Status: doctor.OK,
		Message: fmt.Sprintf("handshake with the gateway and Fly DNS (_api.internal) through the tunnel (%s)", status)}
	if strings.Contains(status, "transport=websocket") {
		ready = doctor.Result{Group: groupTunnel, Check: checkTunnelReady, Status: doctor.Warn,
			Message: "handshake and Fly DNS (_api.internal) through the tunnel, over WebSocket", Cause: "UDP to the gateway is blocked from here: " + status,
			Fix: "allow UDP 51820 to the gateway for lower latency; the tunnel works over TCP 443 meanwhile"}
	}
	out := []doctor.Result{ready}
	if to.target != nil {
		out = append(out, dialTarget(ctx, s, *to.target, to.timeout))
	}
	return out
}

// dialTarget opens a TCP connection to t through the ready tunnel and
// closes it again.
func dialTarget(ctx context.Context, s *sidecar.Sidecar, t target.Target, timeout time.Duration) doctor.Result {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	c, err := s.Dial(dctx, t.Host, t.Port)
	if err == nil {
		_ = c.Close()
		return doctor.Result{Group: groupTunnel, Check: checkTunnelTarget, Status: doctor.OK,
			Message: fmt.Sprintf("TCP connect to %s through the tunnel in %s", t, time.Since(start).Round(time.Millisecond))}
	}
	reason, _, _ := strings.Cut(err.Error(), ":")
	fix := "check the app's name and port (`fly services list -a APP`)"
	switch reason {
	case "dns":
		fix = "the name does not resolve in this org's Fly DNS: check the app name and the org (`fly apps list -o ORG`); flycast needs `fly ips allocate-v6 --private`"
	case "refused":
		fix = fmt.Sprintf("nothing listens on port %d: check the port and the app's services (`fly services list -a APP`)", t.Port)
	case "timeout", "unreachable":
		fix = "the app does not answer: its Machines are stopped or in another org (`fly status -a APP`)"
	}
	return doctor.Result{Group: groupTunnel, Check: checkTunnelTarget, Status: doctor.Fail,
		Message: fmt.Sprintf("cannot connect to %s through the tunnel", t), Cause: err.Error(), Fix: fix}
}
