package link

import (
	"math"
	"net"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Unix(1000, 0)

func TestDelayWithoutRate(t *testing.T) {
	m := NewModel(Params{Delay: 25 * time.Millisecond})
	for i := 0; i < 100; i++ {
		now := t0.Add(time.Duration(i) * time.Microsecond)
		due, ok := m.Admit(now, 1400)
		if !ok {
			t.Fatalf("datagram %d dropped on a lossless link", i)
		}
		if got := due.Sub(now); got != 25*time.Millisecond {
			t.Fatalf("datagram %d delayed %v, want 25ms", i, got)
		}
	}
}

func TestJitterBoundsAndOrder(t *testing.T) {
	m := NewModel(Params{Delay: 10 * time.Millisecond, Jitter: 2 * time.Millisecond, Seed: 7})
	var last time.Time
	var spread []time.Duration
	for i := 0; i < 2000; i++ {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		due, ok := m.Admit(now, 100)
		if !ok {
			t.Fatal("dropped")
		}
		if due.Before(last) {
			t.Fatalf("datagram %d reordered: due %v before %v", i, due, last)
		}
		last = due
		d := due.Sub(now)
		if d < 8*time.Millisecond || d > 12*time.Millisecond+100*time.Microsecond {
			t.Fatalf("datagram %d delayed %v, outside 10ms ± 2ms", i, d)
		}
		spread = append(spread, d)
	}
	lo, hi := spread[0], spread[0]
	for _, d := range spread {
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi-lo < 3*time.Millisecond {
		t.Fatalf("jitter spread %v, want close to 4ms", hi-lo)
	}
}

func TestLossRate(t *testing.T) {
	for _, loss := range []float64{0, 0.001, 0.01, 0.3} {
		m := NewModel(Params{Loss: loss, Seed: 42})
		const n = 200000
		for i := 0; i < n; i++ {
			m.Admit(t0.Add(time.Duration(i)), 1000)
		}
		st := m.Stats()
		if st.Offered != n || st.Lost+st.Delivered != n {
			t.Fatalf("loss %v: counts %+v", loss, st)
		}
		got := float64(st.Lost) / n
		// Four standard deviations of a binomial proportion.
		tol := 4 * math.Sqrt(loss*(1-loss)/n)
		if math.Abs(got-loss) > tol {
			t.Errorf("loss %v: measured %.5f, outside ± %.5f", loss, got, tol)
		}
	}
	// Same seed, same fate.
	a, b := NewModel(Params{Loss: 0.05, Seed: 3}), NewModel(Params{Loss: 0.05, Seed: 3})
	for i := 0; i < 1000; i++ {
		_, oa := a.Admit(t0, 10)
		_, ob := b.Admit(t0, 10)
		if oa != ob {
			t.Fatalf("datagram %d: seeded models disagree", i)
		}
	}
}

func TestRateCapSpacing(t *testing.T) {
	// 100 Mbit/s: a 1250-byte datagram takes 100 µs to serialise.
	m := NewModel(Params{RateBits: 100e6, Delay: time.Millisecond, QueueBytes: 1 << 20})
	var dues []time.Time
	for i := 0; i < 50; i++ { // a burst, all at once
		due, ok := m.Admit(t0, 1250)
		if !ok {
			t.Fatalf("datagram %d dropped below the queue limit", i)
		}
		dues = append(dues, due)
	}
	for i, due := range dues {
		want := t0.Add(time.Millisecond + time.Duration(i+1)*100*time.Microsecond)
		if !due.Equal(want) {
			t.Fatalf("datagram %d due at +%v, want +%v", i, due.Sub(t0), want.Sub(t0))
		}
	}
	// Offered at exactly the cap for one second: all of it goes through
	// and the last datagram leaves one second (plus the delay) later.
	m = NewModel(Params{RateBits: 100e6, QueueBytes: 10000})
	var last time.Time
	for i := 0; i < 10000; i++ {
		due, ok := m.Admit(t0.Add(time.Duration(i)*100*time.Microsecond), 1250)
		if !ok {
			t.Fatalf("datagram %d dropped at the cap", i)
		}
		last = due
	}
	if got := last.Sub(t0); got != time.Second {
		t.Fatalf("10000 × 1250 B at 100 Mbit/s done after %v, want 1s", got)
	}
}

func TestQueueLimitDropTail(t *testing.T) {
	// 10 Mbit/s, 10 kB queue: a burst of 100 × 1000 B keeps the ten that
	// fit (the backlog counts the datagram being serialised too).
	m := NewModel(Params{RateBits: 10e6, QueueBytes: 10000})
	kept := 0
	for i := 0; i < 100; i++ {
		if _, ok := m.Admit(t0, 1000); ok {
			kept++
		} else if kept < 10 {
			t.Fatalf("datagram %d dropped with only %d queued", i, kept)
		}
	}
	st := m.Stats()
	if kept != 10 || st.QueueDrops != 90 || st.MaxQueueBytes > 10000 {
		t.Fatalf("kept %d, stats %+v; want 10 kept, 90 drop-tail, backlog ≤ 10000", kept, st)
	}
	// Once the queue drains (10 × 800 µs), there is room again.
	if _, ok := m.Admit(t0.Add(9*time.Millisecond), 1000); !ok {
		t.Fatal("dropped after the queue drained")
	}
	// Offered at twice the cap for a second: about half goes through.
	m = NewModel(Params{RateBits: 10e6, QueueBytes: 20000})
	for i := 0; i < 2500; i++ {
		m.Admit(t0.Add(time.Duration(i)*400*time.Microsecond), 1000)
	}
	st = m.Stats()
	if st.Delivered < 1240 || st.Delivered > 1275 {
		t.Fatalf("2x overload: delivered %d of 2500, want ≈ 1250 + queue", st.Delivered)
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []Params{{Delay: -1}, {Jitter: -1}, {Loss: 1.5}, {Loss: -0.1}, {RateBits: -1}, {QueueBytes: -1}} {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if _, err := NewRelay(netip.MustParseAddrPort("192.0.2.1:9"), Params{}, Params{}); err == nil {
		t.Error("a non-loopback target was accepted")
	}
}

// TestRelayDelays sends datagrams both ways through a real relay on
// loopback and checks that none arrives before its one-way delay, that the
// payload is intact, and that replies find the client.
func TestRelayDelays(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const delay = 20 * time.Millisecond
	r, err := NewRelay(srv.LocalAddr().(*net.UDPAddr).AddrPort(), Params{Delay: delay}, Params{Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cl, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	buf := make([]byte, 2000)
	for i := 0; i < 5; i++ {
		msg := []byte{byte(i), 1, 2, 3}
		start := time.Now()
		if _, err := cl.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := srv.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got < delay {
			t.Fatalf("up: arrived after %v, before the %v delay", got, delay)
		}
		if string(buf[:n]) != string(msg) {
			t.Fatalf("up: payload %v, want %v", buf[:n], msg)
		}
		if _, err := srv.WriteToUDP(buf[:n], from); err != nil {
			t.Fatal(err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err = cl.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got < 2*delay {
			t.Fatalf("round trip %v, before 2 × %v", got, delay)
		}
		if string(buf[:n]) != string(msg) {
			t.Fatalf("down: payload %v", buf[:n])
		}
	}
	up, down := r.Stats()
	if up.Delivered != 5 || down.Delivered != 5 || up.Overflow != 0 {
		t.Fatalf("stats up %+v down %+v", up, down)
	}
}
