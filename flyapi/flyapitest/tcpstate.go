package flyapitest

import (
	"fmt"
	"slices"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// DescribeTCP returns one line per TCP connection of a gVisor stack: ports,
// state, congestion state and window, RTT and RTO, bytes waiting to be
// read and the sender's retransmission counters. Tests print it when a stream stops, so
// that the failure shows which end holds the data and why it does not move
// (docs/stall.md). Listeners are left out.
func DescribeTCP(st *stack.Stack) []string {
	var lines []string
	for _, te := range st.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		var info tcpip.TCPInfoOption
		if err := ep.GetSockOpt(&info); err != nil || tcp.EndpointState(info.State) == tcp.StateListen {
			continue
		}
		recvq, _ := ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
		var id stack.TransportEndpointID
		if i, ok := ep.Info().(*stack.TransportEndpointInfo); ok {
			id = i.ID
		}
		line := fmt.Sprintf("port %d->%d %s cc=%s cwnd=%d ssthresh=%d rtt=%v rto=%v recvq=%d",
			id.LocalPort, id.RemotePort, tcp.EndpointState(info.State), ccState(info.CcState),
			info.SndCwnd, info.SndSsthresh, info.RTT, info.RTO, recvq)
		if s, ok := ep.Stats().(*tcp.Stats); ok {
			line += fmt.Sprintf(" sent=%d recv=%d retransmits=%d fast=%d timeouts=%d",
				s.SegmentsSent.Value(), s.SegmentsReceived.Value(), s.SendErrors.Retransmits.Value(),
				s.SendErrors.FastRetransmit.Value(), s.SendErrors.Timeouts.Value())
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	return lines
}

func ccState(s tcpip.CongestionControlState) string {
	switch s {
	case tcpip.Open:
		return "open"
	case tcpip.RTORecovery:
		return "rto-recovery"
	case tcpip.FastRecovery:
		return "fast-recovery"
	case tcpip.SACKRecovery:
		return "sack-recovery"
	default:
		return fmt.Sprintf("%d", s)
	}
}

// DescribeGatewayTCP is DescribeTCP of the gateway's netstack (nil when the
// gateway is disabled).
func (s *Server) DescribeGatewayTCP() []string {
	if s.gw == nil {
		return nil
	}
	return DescribeTCP(s.gw.st)
}
