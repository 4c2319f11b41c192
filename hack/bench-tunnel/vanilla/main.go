// Command vanilla is the benchmark baseline: a TCP forwarder built the way
// the original glaceon proxy and most wireguard-go users build it (untuned
// tun/netstack.CreateNetTUN, conn.NewDefaultBind, io.Copy, no GOMEMLIMIT).
// It accepts the sidecar's flags so hack/bench-tunnel can run it in the same
// harness (-baseline). Not for production.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/glaceon/glaceon/flyapi/wgquick"
)

func main() {
	cfgPath := flag.String("wg-config", "", "")
	forward := flag.String("forward", "", "")
	health := flag.String("health-addr", "127.0.0.1:9901", "")
	flag.String("shutdown-grace", "", "")
	flag.String("log-level", "", "")
	flag.Parse()
	data, err := os.ReadFile(*cfgPath)
	if err != nil {
		fail(err)
	}
	cfg, err := wgquick.Parse(data)
	if err != nil {
		fail(err)
	}
	tunDev, tnet, err := netstack.CreateNetTUN([]netip.Addr{cfg.Address}, []netip.Addr{cfg.DNS}, 1420)
	if err != nil {
		fail(err)
	}
	dev := device.NewDevice(tunDev, conn.NewDefaultBind(), logger())
	host, port, _ := net.SplitHostPort(cfg.Endpoint)
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip4", host)
	if err != nil || len(ips) == 0 {
		fail(fmt.Errorf("resolve %s: %v", host, err))
	}
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\npersistent_keepalive_interval=15\nallowed_ip=%s\n",
		cfg.PrivateKey.Hex(), cfg.PeerPublicKey.Hex(), net.JoinHostPort(ips[0].Unmap().String(), port), cfg.AllowedIPs[0])
	if err := dev.IpcSet(uapi); err != nil {
		fail(err)
	}
	if err := dev.Up(); err != nil {
		fail(err)
	}
	listen, target, _ := strings.Cut(*forward, "=")
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fail(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r, err := tnet.DialContext(context.Background(), "tcp", target)
				if err != nil {
					return
				}
				defer r.Close()
				go func() { _, _ = io.Copy(r, c) }()
				_, _ = io.Copy(c, r)
			}()
		}
	}()
	ready := make(chan struct{})
	go func() { // ready once a lookup through the tunnel answers
		h, _, _ := net.SplitHostPort(target)
		for {
			if _, err := tnet.LookupHost(h); err == nil {
				close(ready)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	hl, err := net.Listen("tcp", *health)
	if err != nil {
		fail(err)
	}
	go http.Serve(hl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
			io.WriteString(w, "ok\n")
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	dev.Close()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vanilla:", err)
	os.Exit(1)
}

func logger() *device.Logger {
	l := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, a ...any) { fmt.Fprintf(os.Stderr, "vanilla: "+f+"\n", a...) },
	}
	if os.Getenv("VANILLA_VERBOSE") != "" {
		l.Verbosef = l.Errorf
	}
	return l
}
