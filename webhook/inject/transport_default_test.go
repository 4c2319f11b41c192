package inject

import (
	"strings"
	"testing"
)

// The cluster-wide default transport (manager --sidecar-transport) applies
// when neither the pod nor the MachineProxy names one, and only then.
func TestDefaultTransport(t *testing.T) {
	for _, tc := range []struct{ cfg, own, want string }{
		{"", "", ""},
		{"udp", "", "--transport udp"},
		{"udp", "websocket", "--transport websocket"},
		{"", "websocket", "--transport websocket"},
	} {
		cfg := DefaultConfig()
		cfg.Transport = tc.cfg
		args := strings.Join(SidecarArgs(cfg, nil, tc.own), " ")
		if tc.want == "" && strings.Contains(args, "--transport") || tc.want != "" && !strings.HasSuffix(args, tc.want) {
			t.Errorf("default %q, own %q: args %q, want %q", tc.cfg, tc.own, args, tc.want)
		}
	}
	cfg := DefaultConfig()
	cfg.DefaultOrg = "personal"
	cfg.Transport = "tcp"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `sidecar transport "tcp" is not one of auto, udp, websocket`) {
		t.Errorf("Validate with transport tcp: %v", err)
	}
}
