package wgws

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// gatewayServer accepts WebSockets with Accept and hands each Conn (or the
// Accept error) to the test.
func gatewayServer(t *testing.T) (url string, conns chan *Conn, errs chan error, origins chan string) {
	t.Helper()
	conns, errs, origins = make(chan *Conn, 4), make(chan error, 4), make(chan string, 4)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origins <- r.Header.Get("Origin")
		c, err := Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true}, nil)
		if err != nil {
			errs <- err
			return
		}
		conns <- c
		<-c.Done()
	}))
	t.Cleanup(srv.Close)
	return "wss://" + strings.TrimPrefix(srv.URL, "https://") + "/", conns, errs, origins
}

func TestDialRoundTripAndKeepalive(t *testing.T) {
	url, conns, errs, origins := gatewayServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, DialOptions{URL: url}) // self-signed: not verified, as flyctl
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s *Conn
	select {
	case s = <-conns:
	case err := <-errs:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("no connection")
	}
	if o := <-origins; o != url {
		t.Fatalf("Origin %q, want %q", o, url)
	}
	buf := make([]byte, MaxDatagram)
	for _, p := range []string{"a", strings.Repeat("x", 1420)} {
		if err := c.WriteDatagram([]byte(p)); err != nil {
			t.Fatal(err)
		}
		n, err := s.ReadDatagram(buf)
		if err != nil || string(buf[:n]) != p {
			t.Fatalf("server read %d %v", n, err)
		}
		if err := s.WriteDatagram([]byte(p)); err != nil {
			t.Fatal(err)
		}
		n, err = c.ReadDatagram(buf)
		if err != nil || string(buf[:n]) != p {
			t.Fatalf("client read %d %v", n, err)
		}
	}
	// Idle: a keepalive frame arrives within a few seconds; the raw
	// reader (ReadFrame) shows it as a zero-length frame.
	go c.KeepAlive()
	got := make(chan error, 1)
	go func() {
		n, err := ReadFrame(s.br, buf)
		if err == nil && n != 0 {
			err = errors.New("not a keepalive")
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * KeepaliveAfter):
		t.Fatal("no keepalive after idle")
	}
}

func TestAcceptRejectsMissingMagic(t *testing.T) {
	url, _, errs, _ := gatewayServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A client that skips the magic and sends a frame straight away.
	tr := &http.Transport{TLSClientConfig: insecureTLS()}
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_ = ws.Write(ctx, websocket.MessageText, AppendFrame(nil, make([]byte, 148)))
	select {
	case err := <-errs:
		if !errors.Is(err, ErrBadMagic) {
			t.Fatalf("accept error %v, want bad magic", err)
		}
	case <-ctx.Done():
		t.Fatal("gateway did not reject the connection")
	}
}

func TestReadRejectsBinaryMessage(t *testing.T) {
	url, conns, _, _ := gatewayServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, DialOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-conns
	if err := s.WriteBinary(AppendFrame(nil, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadDatagram(make([]byte, MaxDatagram)); !errors.Is(err, ErrWrongMessageType) {
		t.Fatalf("read %v, want wrong message type", err)
	}
}
