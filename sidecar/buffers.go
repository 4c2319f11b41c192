package sidecar

import (
	"runtime/debug"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// bufferBudget is what the TCP buffers of all connections may hold together
// for a Go memory limit: a quarter of it (DefaultMemoryLimit's when there is
// none), leaving the rest to the packet buffers, the runtime and the GC's
// headroom.
func bufferBudget(memLimit int64) int64 {
	if memLimit <= 0 || memLimit >= 1<<40 { // GOMEMLIMIT=off: no limit to derive from
		memLimit = DefaultMemoryLimit
	}
	return memLimit / tcpBudgetFraction
}

// inFlight is the packetGate's bound: what was asked for, or as many
// wireguard-go buffers as half the TCP budget pays for.
func inFlight(asked int, budget int64) int {
	switch {
	case asked != 0:
		return asked
	case budget <= 0:
		budget = bufferBudget(debug.SetMemoryLimit(-1))
	}
	return int(min(max(budget/2/wgMessageBuffer, 64), 1024))
}

// bufShare is one connection's maximum receive (and send) buffer when conns
// connections share budget.
func bufShare(budget int64, conns int) int {
	share := budget / int64(max(conns, 1))
	return int(min(max(share, tcpBufMaxFloor), tcpBufMaxCeiling))
}

// retune sets the stack's buffer maxima to the share of conns connections.
// gVisor's auto-tuning reads them each time it grows a buffer, so the new
// share limits further growth at once; a buffer that already grew keeps its
// size (shrinking it would drop data in flight).
func (t *netTun) retune(conns int) {
	share := bufShare(t.budget, conns)
	t.retuneM.Lock()
	defer t.retuneM.Unlock()
	if int64(share) == t.bufMax.Load() {
		return
	}
	rcvMax, sndMax := share, share
	if t.rcvFixed > 0 {
		rcvMax = t.rcvFixed
	}
	if t.sndFixed > 0 {
		sndMax = t.sndFixed
	}
	rcv, snd := bufRanges(rcvMax, sndMax)
	// Errors only for invalid ranges, which bufShare cannot produce.
	_ = t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	_ = t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	t.bufMax.Store(int64(share))
}

func bufRanges(rcvMax, sndMax int) (tcpip.TCPReceiveBufferSizeRangeOption, tcpip.TCPSendBufferSizeRangeOption) {
	return tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpRecvBufMin, Default: min(tcpRecvBufDef, rcvMax), Max: rcvMax},
		tcpip.TCPSendBufferSizeRangeOption{Min: tcpSendBufMin, Default: min(tcpSendBufDef, sndMax), Max: sndMax}
}

// established is the number of open TCP connections (ESTABLISHED or
// CLOSE-WAIT).
func (t *netTun) established() int {
	return int(t.stack.Stats().TCP.CurrentEstablished.Value())
}

// retuneLoop follows connections that closed, so that the remaining ones
// may grow again.
func (t *netTun) retuneLoop() {
	tick := time.NewTicker(budgetRetune)
	defer tick.Stop()
	for {
		select {
		case <-t.closed:
			return
		case <-tick.C:
			t.retune(t.established())
		}
	}
}
