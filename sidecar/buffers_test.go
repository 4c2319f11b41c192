package sidecar

import (
	"math"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestBufferBudget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int64
		want  int64
	}{
		{"default limit", DefaultMemoryLimit, 24 << 20},
		{"128Mi container, 75 % of it", 96 << 20, 24 << 20},
		{"1Gi container", 768 << 20, 192 << 20},
		{"no limit (GOMEMLIMIT=off)", math.MaxInt64, DefaultMemoryLimit / 4},
		{"unknown", 0, DefaultMemoryLimit / 4},
	} {
		if got := bufferBudget(tc.limit); got != tc.want {
			t.Errorf("%s: bufferBudget(%d) = %d, want %d", tc.name, tc.limit, got, tc.want)
		}
	}
}

func TestBufShare(t *testing.T) {
	for _, tc := range []struct {
		budget int64
		conns  int
		want   int
	}{
		{24 << 20, 0, tcpBufMaxCeiling},
		{24 << 20, 1, tcpBufMaxCeiling},
		{24 << 20, 3, tcpBufMaxCeiling},
		{24 << 20, 16, 24 << 20 / 16},
		{24 << 20, 100, tcpBufMaxFloor},
		{1 << 20, 1, 1 << 20},
		{192 << 20, 16, tcpBufMaxCeiling},
	} {
		if got := bufShare(tc.budget, tc.conns); got != tc.want {
			t.Errorf("bufShare(%d, %d) = %d, want %d", tc.budget, tc.conns, got, tc.want)
		}
	}
}

func TestInFlight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		asked  int
		budget int64
		want   int
	}{
		{"asked for", 100, 24 << 20, 100},
		{"off", -1, 24 << 20, -1},
		{"from the default budget", 0, 24 << 20, 192},
		{"small budget: at least 64", 0, 1 << 20, 64},
		{"large budget: at most 1024", 0, 1 << 30, 1024},
	} {
		if got := inFlight(tc.asked, tc.budget); got != tc.want {
			t.Errorf("%s: inFlight(%d, %d) = %d, want %d", tc.name, tc.asked, tc.budget, got, tc.want)
		}
	}
}

// TestNetstackBufferShares checks that the shares reach the stack's TCP
// options, which gVisor's auto-tuning reads each time it grows a buffer,
// and that a fixed maximum (GLACEON_TUNING) stays fixed.
func TestNetstackBufferShares(t *testing.T) {
	maxima := func(n *netTun) (rcv, snd int) {
		var r tcpip.TCPReceiveBufferSizeRangeOption
		var s tcpip.TCPSendBufferSizeRangeOption
		readTCPOptions(t, n, &r, &s)
		return r.Max, s.Max
	}
	local := netip.MustParseAddr("fdaa:0:1:a7b:1:0:a:102")
	n, err := newNetTun(netStackOptions{MTU: 1420, Local: local, BufferBudget: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, tc := range []struct {
		conns int
		want  int
	}{{1, 8 << 20}, {4, 4 << 20}, {1000, tcpBufMaxFloor}, {2, 8 << 20}} {
		n.retune(tc.conns)
		if rcv, snd := maxima(n); rcv != tc.want || snd != tc.want {
			t.Errorf("%d connections: receive/send max %d/%d, want %d", tc.conns, rcv, snd, tc.want)
		}
	}

	fixed, err := newNetTun(netStackOptions{MTU: 1420, Local: local, BufferBudget: 16 << 20, RecvBufMax: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fixed.Close()
	fixed.retune(4)
	if rcv, snd := maxima(fixed); rcv != 1<<20 || snd != 4<<20 {
		t.Errorf("rcvbuf fixed at 1 MiB, 4 connections: receive/send max %d/%d, want %d/%d", rcv, snd, 1<<20, 4<<20)
	}
}
