package sidecar

import (
	"testing"
	"time"
)

// gateReturned reports whether g.wait returns within d.
func gateReturned(g *packetGate, d time.Duration) bool {
	done := make(chan struct{})
	go func() { g.wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func TestPacketGateCountsDataPackets(t *testing.T) {
	g := newPacketGate(10, make(chan struct{}))
	data := make([]byte, 1452)
	data[0] = 4
	keepalive := make([]byte, wgDataHeader)
	keepalive[0] = 4
	handshake := make([]byte, 148)
	handshake[0] = 1
	bufs := [][]byte{data, keepalive, handshake, data}
	sizes := []int{len(data), len(keepalive), len(handshake), len(data)}
	g.read(bufs, sizes, len(bufs))
	if g.n != 2 {
		t.Fatalf("counted %d packets, want the 2 data packets (not the keepalive or the handshake)", g.n)
	}
	g.read(bufs, sizes, 1) // only what the receive returned
	if g.n != 3 {
		t.Fatalf("counted %d packets, want 3", g.n)
	}
}

func TestPacketGateBlocksAtItsBound(t *testing.T) {
	g := newPacketGate(4, make(chan struct{}))
	g.take(3)
	if !gateReturned(g, time.Second) {
		t.Fatal("wait blocked below the bound")
	}
	g.take(2)
	done := make(chan struct{})
	go func() { g.wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("wait returned with 5 of 4 packets in flight")
	case <-time.After(gateStuck / 2):
	}
	g.written(2)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait still blocked after the netstack took packets")
	}
	if g.n != 3 {
		t.Fatalf("%d in flight, want 3", g.n)
	}
	g.written(10) // more than counted (handshakes on the outbound path)
	if g.n != 0 {
		t.Fatalf("%d in flight after over-release, want 0", g.n)
	}
}

// TestPacketGateForgetsLostCredits: packets wireguard-go drops after the
// bind never reach the netstack; the gate must not stay shut for them.
func TestPacketGateForgetsLostCredits(t *testing.T) {
	g := newPacketGate(4, make(chan struct{}))
	g.take(4)
	if !gateReturned(g, 20*gateStuck) {
		t.Fatal("wait stayed blocked with no packet reaching the netstack")
	}
	if g.n != 0 {
		t.Fatalf("%d in flight after the reset, want 0", g.n)
	}
}

func TestPacketGateOpensOnClose(t *testing.T) {
	closed := make(chan struct{})
	g := newPacketGate(1, closed)
	g.take(1)
	done := make(chan struct{})
	go func() { g.wait(); close(done) }()
	close(closed)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait blocked after the tunnel closed")
	}
}
