package flyapitest

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestGatewayTCP: the gateway's senders run without RACK (docs/stall.md),
// and DescribeGatewayTCP shows an open connection to one of its apps.
func TestGatewayTCP(t *testing.T) {
	s := Start(t, Options{})
	var rack tcpip.TCPRecovery
	if err := s.gw.st.TransportProtocolOption(tcp.ProtocolNumber, &rack); err != nil {
		t.Fatal(err)
	}
	if rack != 0 {
		t.Errorf("gateway TCP recovery = %d, want 0 (RACK off)", rack)
	}

	c := newWGClient(t, s, "personal", "describe")
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := c.tnet.DialContext(ctx, "tcp", "echo.flycast:7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// An echo round trip: the gateway's end has left SYN-RCVD.
	buf := []byte("x")
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	d := s.DescribeGatewayTCP()
	if len(d) != 1 || !strings.HasPrefix(d[0], "port 7->") || !strings.Contains(d[0], " ESTABLISHED cc=open ") {
		t.Errorf("gateway TCP described as %q", d)
	}
}
