package sidecar

import (
	"errors"
	"strings"
	"testing"
)

func TestParseOptionsTransport(t *testing.T) {
	base := []string{"--wg-config", "/x.conf", "--forward", "127.0.0.2:80=app.flycast:80"}
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		want     Transport
		wantPort int
		field    string // "" = no error
		msg      string
	}{
		{name: "default", want: TransportAuto, wantPort: 443},
		{name: "flag", args: []string{"--transport", "websocket"}, want: TransportWebSocket, wantPort: 443},
		{name: "env, any case", env: map[string]string{EnvTransport: " UDP "}, want: TransportUDP, wantPort: 443},
		{name: "flag wins", args: []string{"--transport=auto"}, env: map[string]string{EnvTransport: "udp"}, want: TransportAuto, wantPort: 443},
		{name: "test port", env: map[string]string{EnvWebSocketPort: "8443"}, want: TransportAuto, wantPort: 8443},
		{name: "bad flag", args: []string{"--transport", "tcp"}, field: "--transport", msg: `"tcp" is not a transport: use auto`},
		{name: "bad env", env: map[string]string{EnvTransport: "quic"}, field: EnvTransport, msg: "use auto (UDP, falling back to WebSocket), udp or websocket"},
		{name: "bad port", env: map[string]string{EnvWebSocketPort: "0"}, field: EnvWebSocketPort, msg: "Fly gateways serve WebSockets on 443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOptions(append(append([]string(nil), base...), tc.args...), envMap(tc.env))
			if tc.field != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || ue.Field != tc.field || !strings.Contains(ue.Msg, tc.msg) {
					t.Fatalf("err = %v, want a UsageError on %s containing %q", err, tc.field, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Transport != tc.want || o.WebSocketPort != tc.wantPort {
				t.Fatalf("transport %q port %d, want %q %d", o.Transport, o.WebSocketPort, tc.want, tc.wantPort)
			}
		})
	}
}
