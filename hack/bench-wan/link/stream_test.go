package link

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestRoomIsBackpressure(t *testing.T) {
	// 10 Mbit/s, 10 kB queue: 1000 B take 800 µs to serialise.
	m := NewModel(Params{RateBits: 10e6, QueueBytes: 10000})
	for i := 0; i < 10; i++ {
		if w := m.Room(t0, 1000); w != 0 {
			t.Fatalf("chunk %d: wait %v with the queue not full", i, w)
		}
		if _, ok := m.Admit(t0, 1000); !ok {
			t.Fatalf("chunk %d dropped after Room said it fits", i)
		}
	}
	// Full: the next 1000 B fit once one chunk's time has passed.
	if w := m.Room(t0, 1000); w != 800*time.Microsecond {
		t.Fatalf("full queue: wait %v, want 800µs", w)
	}
	if _, ok := m.Admit(t0.Add(800*time.Microsecond), 1000); !ok {
		t.Fatal("dropped after waiting what Room said")
	}
	// A chunk larger than the queue waits for an empty queue, then fits.
	if w := m.Room(t0.Add(800*time.Microsecond), 20000); w != 8*time.Millisecond {
		t.Fatalf("oversized chunk: wait %v, want the 8ms backlog", w)
	}
	// Without a cap nothing waits.
	if w := NewModel(Params{Delay: time.Second}).Room(t0, 1<<20); w != 0 {
		t.Fatalf("no cap: wait %v", w)
	}
}

func TestStreamRelayRefusesLoss(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.1:9")
	if _, err := NewStreamRelay(target, Params{Loss: 0.01}, Params{}); !errors.Is(err, ErrStreamLoss) {
		t.Fatalf("loss accepted: %v", err)
	}
	if _, err := NewStreamRelay(netip.MustParseAddrPort("192.0.2.1:9"), Params{}, Params{}); err == nil {
		t.Fatal("a non-loopback target was accepted")
	}
	r, err := NewStreamRelay(target, Params{}, Params{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Set(Params{}, Params{Loss: 0.001}); !errors.Is(err, ErrStreamLoss) {
		t.Fatalf("Set with loss: %v", err)
	}
}

// echoServer echoes every connection until it ends.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// dialEchoRelay starts a relay with the given directions in front of an
// echo server and dials it; the connection's deadline is timeout from now.
// Both are closed when the test ends.
func dialEchoRelay(t *testing.T, up, down Params, timeout time.Duration) (*StreamRelay, net.Conn) {
	t.Helper()
	r, err := NewStreamRelay(echoServer(t), up, down)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c, err := net.Dial("tcp4", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(timeout))
	return r, c
}

// TestStreamRelayDelays: small messages through a relay with 20 ms each
// way never come back before 40 ms, intact.
func TestStreamRelayDelays(t *testing.T) {
	const delay = 20 * time.Millisecond
	r, c := dialEchoRelay(t, Params{Delay: delay}, Params{Delay: delay}, 20*time.Second)
	buf := make([]byte, 64)
	for i := 0; i < 5; i++ {
		msg := []byte{byte(i), 1, 2, 3}
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got < 2*delay {
			t.Fatalf("round trip %v, before 2 × %v", got, delay)
		}
		if !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("echo %v, want %v", buf[:len(msg)], msg)
		}
	}
	up, down := r.Stats()
	if up.Delivered != 5 || down.Delivered != 5 || up.Lost+up.QueueDrops+down.Lost+down.QueueDrops != 0 {
		t.Fatalf("stats up %+v down %+v", up, down)
	}
}

// TestStreamRelayRateCapIntact pushes 4 MiB each way through a 100 Mbit/s
// cap with a small queue: it cannot take less than the cap allows, the
// small queue makes the reader wait (backpressure, never a drop), every
// byte arrives in order, and the end of the stream gets through.
func TestStreamRelayRateCapIntact(t *testing.T) {
	p := Params{Delay: 2 * time.Millisecond, RateBits: 100e6, QueueBytes: 64 << 10}
	r, c := dialEchoRelay(t, p, p, 30*time.Second)
	const size = 4 << 20
	data := make([]byte, size)
	rand.New(rand.NewSource(5)).Read(data)
	start := time.Now()
	go func() {
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c) // ends when the echo's CloseWrite gets through
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo of %d bytes differs (got %d bytes)", size, len(got))
	}
	// 4 MiB at 100 Mbit/s: 0.336 s on the way up alone.
	if min := time.Duration(float64(size*8) / 100e6 * float64(time.Second)); el < min {
		t.Fatalf("4 MiB in %v, faster than the cap allows (%v)", el, min)
	}
	up, down := r.Stats()
	if up.OfferedBytes != size || down.OfferedBytes != size || up.QueueDrops+down.QueueDrops+up.Lost+down.Lost != 0 {
		t.Fatalf("stats up %+v down %+v", up, down)
	}
	if up.MaxQueueBytes > p.QueueBytes || down.MaxQueueBytes > p.QueueBytes {
		t.Fatalf("backlog above the %d B queue: up %d down %d", p.QueueBytes, up.MaxQueueBytes, down.MaxQueueBytes)
	}
	if wu, _ := r.Waits(); wu == 0 {
		t.Fatal("no read waited for room with a 64 KiB queue at the cap")
	}
}
