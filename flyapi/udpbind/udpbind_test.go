package udpbind

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

func TestLoopbackOnly(t *testing.T) {
	b := New(Options{Loopback: true})
	if _, err := b.ParseEndpoint("192.0.2.1:51820"); err == nil {
		t.Error("a loopback-only bind accepted a non-loopback endpoint")
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, c := range []*net.UDPConn{b.c4, b.c6} {
		if c != nil && !c.LocalAddr().(*net.UDPAddr).IP.IsLoopback() {
			t.Errorf("listens on %s, want loopback only", c.LocalAddr())
		}
	}
	if err := b.Send([][]byte{{1}}, &bindEndpoint{}); !errors.Is(err, conn.ErrWrongEndpointType) {
		t.Errorf("Send to a non-loopback endpoint: %v, want ErrWrongEndpointType", err)
	}
}

// TestBatchRoundTrip sends a batch from one bind to another over loopback
// and reads it back in one receive call or a few.
func TestBatchRoundTrip(t *testing.T) {
	recv := New(Options{Loopback: true})
	fns, port, err := recv.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	send := New(Options{})
	if _, _, err := send.Open(0); err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	if recv.LocalPort() != int(port) {
		t.Errorf("LocalPort = %d, Open said %d", recv.LocalPort(), port)
	}
	ep, err := send.ParseEndpoint(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{byte(i), 0xAB}
	}
	if err := send.Send(out, ep); err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, recv.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes := make([]int, len(bufs))
	eps := make([]conn.Endpoint, len(bufs))
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	_ = recv.c4.SetReadDeadline(deadline)
	for got < n {
		k, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", got, err)
		}
		for i := 0; i < k; i++ {
			if sizes[i] != 2 || bufs[i][0] != byte(got) || bufs[i][1] != 0xAB {
				t.Fatalf("datagram %d: %v (size %d)", got, bufs[i][:sizes[i]], sizes[i])
			}
			if eps[i].DstIP().String() != "127.0.0.1" {
				t.Errorf("source %s, want 127.0.0.1", eps[i].DstToString())
			}
			got++
		}
	}
}
