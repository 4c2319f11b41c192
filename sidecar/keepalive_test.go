package sidecar

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// TestE2EKeepaliveClosesVanishedTarget: the target stops answering (its
// packets are dropped at the gateway, no FIN, no RST). An idle connection is
// closed by the keepalive probes, and one with data in flight by the user
// timeout; both free their goroutines. The keepalive idle time is shortened
// to 1s through GLACEON_TUNING; the default is 30s.
func TestE2EKeepaliveClosesVanishedTarget(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	t.Setenv(EnvTuning, "keepalive=1s")
	r, addrs := startSidecarWithLog(t, testr.New(t), newPeerFile(t, srv, "personal"), "echo.flycast:7")
	name := addrs[0] + "=echo.flycast:7"

	open := func() (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		br := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, br); got != "hello\n" {
			t.Fatalf("echo = %q", got)
		}
		return c, br
	}
	idle, idleR := open()
	busy, busyR := open()

	if err := srv.Blackhole("personal", "echo.flycast", true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Blackhole("personal", "echo.flycast", false) })
	// Data sent into the void: never acknowledged.
	if _, err := busy.Write([]byte("into the void\n")); err != nil {
		t.Fatal(err)
	}
	_, ui := keepaliveTimes(time.Second)
	// Both must end well within the bounds (1s idle + 3 probes ≈ 2s; user
	// timeout 2s); 20s leaves room for a loaded machine, not for "never".
	for what, br := range map[string]*bufio.Reader{"idle connection": idleR, "connection with data in flight": busyR} {
		c := idle
		if br == busyR {
			c = busy
		}
		bound := 10*ui + 10*time.Second
		_ = c.SetReadDeadline(time.Now().Add(bound))
		_, err := br.ReadByte()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s to a vanished target still open after %s", what, bound)
		}
		t.Logf("%s closed: %v", what, err)
	}
	waitFor(t, 5*time.Second, "no active connections", func() bool {
		return r.metric(t, `glaceon_forward_connections_active{forward="`+name+`"} `) == "0"
	})

	// The target answers again: new connections work.
	if err := srv.Blackhole("personal", "echo.flycast", false); err != nil {
		t.Fatal(err)
	}
	c, _ := open()
	c.Close()
}

func TestKeepaliveTimes(t *testing.T) {
	interval, user := keepaliveTimes(tcpKeepaliveIdle)
	if interval != 10*time.Second || user != time.Minute {
		t.Errorf("defaults: interval %s, user timeout %s; want 10s and 1m", interval, user)
	}
}
