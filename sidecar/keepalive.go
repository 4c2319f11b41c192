package sidecar

import (
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// TCP keepalive on the tunnel side. An app's own keepalives end at the
// loopback hop, so without these a Fly Machine that vanishes (no FIN, no
// RST) would leave its connections, their goroutines and buffers held for
// ever. An idle connection is probed after tcpKeepaliveIdle and closed when
// tcpKeepaliveCount probes, tcpKeepaliveIdle/3 apart, go unanswered: about a
// minute in all. The same bound applies to data left unacknowledged (TCP
// user timeout), which keepalives do not cover.
const (
	tcpKeepaliveIdle  = 30 * time.Second
	tcpKeepaliveCount = 3
)

// keepaliveTimes derives the probe interval and user timeout from idle.
func keepaliveTimes(idle time.Duration) (interval, userTimeout time.Duration) {
	interval = max(idle/3, 10*time.Millisecond)
	return interval, idle + tcpKeepaliveCount*interval
}

// setKeepalive turns keepalives and the user timeout on for ep.
func setKeepalive(ep tcpip.Endpoint, idle time.Duration) error {
	if idle <= 0 {
		idle = tcpKeepaliveIdle
	}
	interval, user := keepaliveTimes(idle)
	ep.SocketOptions().SetKeepAlive(true)
	ki, kv, ut := tcpip.KeepaliveIdleOption(idle), tcpip.KeepaliveIntervalOption(interval), tcpip.TCPUserTimeoutOption(user)
	for _, opt := range []tcpip.SettableSocketOption{&ki, &kv, &ut} {
		if err := ep.SetSockOpt(opt); err != nil {
			return fmt.Errorf("set %T: %v", opt, err)
		}
	}
	if err := ep.SetSockOptInt(tcpip.KeepaliveCountOption, tcpKeepaliveCount); err != nil {
		return fmt.Errorf("set keepalive count: %v", err)
	}
	return nil
}
