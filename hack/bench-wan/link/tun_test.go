package link

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTunPathTCP: a kernel TCP connection from the root namespace to a
// namespace the test made crosses a TunPath with 10 ms and 1 % loss each
// way. 2 MiB echo back intact (the kernel's TCP repaired what the link
// lost), the connection's smallest RTT is the emulated 20 ms within a few
// per cent, the relay lost packets in both directions, and both interfaces
// are gone after Close. Needs root.
func TestTunPathTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the TUN path test needs root to create TUN devices and a network namespace")
	}
	removeStaleNamespaces(t)
	pid := os.Getpid()
	ns, near, far := fmt.Sprintf("glaceon-link-%d", pid), fmt.Sprintf("gllk%dn", pid), fmt.Sprintf("gllk%df", pid)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	const oneWay = 10 * time.Millisecond
	path, err := NewTunPath(ns, near, far, 1500, Params{Delay: oneWay, Loss: 0.01, Seed: 3}, Params{Delay: oneWay, Loss: 0.01, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			path.Close()
		}
	})

	var ln net.Listener
	if err := InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(path.Far.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, 2<<20)
	_, _ = rand.Read(data)
	go func() {
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo of %d bytes differs (got %d bytes)", len(data), len(got))
	}
	var info *unix.TCPInfo
	sc, _ := c.(*net.TCPConn).SyscallConn()
	_ = sc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		t.Fatal(err)
	}
	rtt := time.Duration(info.Min_rtt) * time.Microsecond
	if rtt < 2*oneWay || rtt > 2*oneWay*110/100 {
		t.Errorf("smallest RTT %v through the path, want %v within 10 %%", rtt, 2*oneWay)
	}
	up, down := path.Stats()
	if up.Lost == 0 || down.Lost == 0 || up.Delivered == 0 || down.Delivered == 0 {
		t.Errorf("link counts up %+v down %+v: want packets delivered and lost both ways", up.Stats, down.Stats)
	}
	if info.Total_retrans == 0 {
		t.Error("the sender never retransmitted, though the link lost packets")
	}
	t.Logf("min RTT %v, retransmissions %d, up %d/%d lost, down %d/%d lost", rtt, info.Total_retrans, up.Lost, up.Offered, down.Lost, down.Offered)

	closed = true
	if err := path.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if out, err := exec.Command("ip", "link", "show", near).CombinedOutput(); err == nil {
		t.Errorf("interface %s is still there after Close: %s", near, out)
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "show", far).CombinedOutput(); err == nil {
		t.Errorf("interface %s is still in %s after Close: %s", far, ns, out)
	}
}

// removeStaleNamespaces deletes the namespaces of earlier test processes
// that were killed before their cleanup ran (their TUN devices went with
// them).
func removeStaleNamespaces(t *testing.T) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, err := strconv.Atoi(strings.TrimPrefix(name, "glaceon-link-"))
		if err != nil || !strings.HasPrefix(name, "glaceon-link-") {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			t.Logf("removing namespace %s of a test process that is gone", name)
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}
