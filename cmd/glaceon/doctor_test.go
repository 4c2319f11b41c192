package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/sidecar"
	"github.com/glaceon/glaceon/webhook/doctor"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
)

// TestDoctorCommand runs `glaceon doctor` as a user would: kubeconfig from
// $KUBECONFIG (client-go's default loading rules, as kubectl), text and
// JSON output, exit code 1 exactly when a check failed. The checks
// themselves are tested fault by fault in webhook/doctor.
func TestDoctorCommand(t *testing.T) {
	e := managertest.Start(t, nil)
	e.ManagerDeployment(t)
	t.Setenv("KUBECONFIG", e.ControlPlane.KubeconfigPath)
	// doctor asks the Fly API itself with the FlyOrg's token.
	t.Setenv("FLY_API_BASE_URL", e.Fly.URL())
	doctorRun := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"doctor"}, args...), nil, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, out, stderr := doctorRun()
	if code != exitOK || !strings.Contains(out, "install\n  ✔ crds:") || !strings.Contains(out, "0 failed") || strings.Contains(out, "✖") {
		t.Fatalf("healthy: exit %d, stdout:\n%s\nstderr: %s", code, out, stderr)
	}
	t.Logf("healthy:\n%s", out)

	var dep appsv1.Deployment
	if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: managertest.Namespace, Name: "glaceon-manager"}, &dep); err != nil {
		t.Fatal(err)
	}
	dep.Spec.Replicas = ptr.To[int32](0)
	if err := e.Client.Update(context.Background(), &dep); err != nil {
		t.Fatal(err)
	}
	code, out, _ = doctorRun()
	if code != exitError || !strings.Contains(out, "✖ manager-deployment: Deployment glaceon-system/glaceon-manager is scaled to 0\n      cause: ") {
		t.Fatalf("scaled to 0: exit %d, stdout:\n%s", code, out)
	}
	t.Logf("scaled to 0:\n%s", out)
	code, out, _ = doctorRun("--skip", "manager-deployment")
	if code != exitOK || !strings.Contains(out, "‼ manager-deployment: skipped (--skip manager-deployment)\n      cause: it found: ✖ Deployment glaceon-system/glaceon-manager is scaled to 0") {
		t.Fatalf("--skip: exit %d, stdout:\n%s", code, out)
	}
	code, out, _ = doctorRun("-o", "json")
	var results []doctor.Result
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != exitError {
		t.Fatalf("-o json: exit %d, %v:\n%s", code, err, out)
	}
	if r := results[1]; r.Check != doctor.CheckDeployment || r.Status != doctor.Fail || r.Fix == "" {
		t.Errorf("-o json: %+v", r)
	}

	code, out, _ = doctorRun("pod", "nothing", "-n", "default")
	if code != exitError || !strings.Contains(out, "✖ pod-denials: no pod default/nothing") {
		t.Errorf("doctor pod of a missing pod: exit %d:\n%s", code, out)
	}
	if code, _, stderr := doctorRun("pod"); code != exitUsage || !strings.Contains(stderr, "missing pod name") {
		t.Errorf("doctor pod without a name: exit %d, %s", code, stderr)
	}
	if code, _, stderr := doctorRun("-o", "yaml"); code != exitUsage || !strings.Contains(stderr, "want text or json") {
		t.Errorf("doctor -o yaml: exit %d, %s", code, stderr)
	}
	t.Run("tunnel", func(t *testing.T) {
		t.Setenv("FLY_API_TOKEN", e.Fly.Token())
		t.Setenv("FLY_ACCESS_TOKEN", "")
		t.Setenv("FLY_WG_GATEWAY_PORT", fmt.Sprint(e.Fly.GatewayPort()))
		before := len(e.Fly.Peers(""))
		code, out, stderr := doctorRun("--skip", "manager-deployment", "--tunnel")
		if code != exitOK || !strings.Contains(out, "✔ tunnel-handshake-dns: handshake with the gateway and Fly DNS (_api.internal) through the tunnel") ||
			!strings.Contains(out, "✔ tunnel-peer-removed: temporary peer glaceon-doctor-") {
			t.Fatalf("--tunnel: exit %d, stdout:\n%s\nstderr: %s", code, out, stderr)
		}
		if n := len(e.Fly.Peers("")); n != before {
			t.Errorf("%d peers at the Fly double after --tunnel, want %d", n, before)
		}
		t.Setenv("FLY_API_TOKEN", "")
		code, out, _ = doctorRun("--skip", "manager-deployment", "--tunnel")
		if code != exitError || !strings.Contains(out, "✖ tunnel-peer: cannot use Fly org personal for the temporary peer") || !strings.Contains(out, "export FLY_API_TOKEN") {
			t.Fatalf("--tunnel without a token: exit %d, stdout:\n%s", code, out)
		}
		t.Setenv("FLY_API_TOKEN", e.Fly.Token())
		peersLeft := func(what string) {
			t.Helper()
			if n := len(e.Fly.Peers("")); n != before {
				t.Errorf("%d peers at the Fly double after %s, want %d", n, what, before)
			}
		}

		// --target: a TCP connect through the tunnel, to the double's
		// sample app, then to a port nothing listens on.
		code, out, _ = doctorRun("--skip", "manager-deployment", "--tunnel", "--target", "twi-ollama.flycast:80")
		if code != exitOK || !strings.Contains(out, "✔ tunnel-target: TCP connect to twi-ollama.flycast:80 through the tunnel in ") {
			t.Fatalf("--tunnel --target: exit %d, stdout:\n%s", code, out)
		}
		peersLeft("--target")
		code, out, _ = doctorRun("--skip", "manager-deployment", "--tunnel", "--target", "twi-ollama.flycast:81")
		if code != exitError || !strings.Contains(out, "✖ tunnel-target: cannot connect to twi-ollama.flycast:81 through the tunnel\n      cause: refused") ||
			!strings.Contains(out, "nothing listens on port 81") || !strings.Contains(out, "✔ tunnel-peer-removed") {
			t.Fatalf("--tunnel --target to a closed port: exit %d, stdout:\n%s", code, out)
		}
		t.Logf("closed port:\n%s", out)
		peersLeft("--target to a closed port")
		if code, _, stderr := doctorRun("--target", "twi-ollama.flycast:80"); code != exitUsage || !strings.Contains(stderr, "--target needs --tunnel") {
			t.Errorf("--target without --tunnel: exit %d, %s", code, stderr)
		}
		if code, _, stderr := doctorRun("--tunnel", "--target", "twi-ollama.flycast"); code != exitUsage || !strings.Contains(stderr, "HOST:PORT") {
			t.Errorf("--target without a port: exit %d, %s", code, stderr)
		}

		e.Fly.BlockUDP(true)
		defer e.Fly.BlockUDP(false)
		// UDP to the gateway blocked, WebSocket works (auto): a warning,
		// exit 0.
		t.Setenv(sidecar.EnvWebSocketPort, fmt.Sprint(e.Fly.WebSocketPort()))
		code, out, _ = doctorRun("--skip", "manager-deployment", "--tunnel")
		if code != exitOK || !strings.Contains(out, "‼ tunnel-handshake-dns: handshake and Fly DNS (_api.internal) through the tunnel, over WebSocket\n      cause: UDP to the gateway is blocked from here: ok transport=websocket") ||
			!strings.Contains(out, "allow UDP 51820") || !strings.Contains(out, "✔ tunnel-peer-removed") {
			t.Fatalf("--tunnel over WebSocket: exit %d, stdout:\n%s", code, out)
		}
		t.Logf("WebSocket fallback:\n%s", out)
		peersLeft("--tunnel over WebSocket")

		// UDP to the gateway blocked, WebSocket not allowed: red, with the
		// hint; the peer is removed all the same.
		code, out, _ = doctorRun("--skip", "manager-deployment", "--tunnel", "--tunnel-transport", "udp", "--tunnel-timeout", "3s")
		if code != exitError || !strings.Contains(out, "✖ tunnel-handshake-dns: no handshake or no Fly DNS through the tunnel") ||
			!strings.Contains(out, "UDP 51820") || !strings.Contains(out, "✔ tunnel-peer-removed") {
			t.Fatalf("--tunnel with UDP blocked: exit %d, stdout:\n%s", code, out)
		}
		t.Logf("UDP blocked:\n%s", out)
		peersLeft("a failed --tunnel")

		// Ctrl-C while the tunnel waits for a handshake: the peer goes
		// all the same. The signal is sent only once the temporary peer
		// exists, when doctor's handler is installed.
		type result struct {
			code int
			out  string
		}
		done := make(chan result, 1)
		go func() {
			code, out, _ := doctorRun("--skip", "manager-deployment", "--tunnel", "--tunnel-transport", "udp", "--tunnel-timeout", "50s")
			done <- result{code, out}
		}()
		err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return len(e.Fly.Peers("")) > before, nil
		})
		if err != nil {
			t.Fatalf("no temporary peer appeared: %v", err)
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.code != exitError || !strings.Contains(r.out, "✖ tunnel-handshake-dns: interrupted before the tunnel was ready") || !strings.Contains(r.out, "✔ tunnel-peer-removed") {
			t.Fatalf("--tunnel interrupted: exit %d, stdout:\n%s", r.code, r.out)
		}
		peersLeft("an interrupted --tunnel")
	})

	t.Setenv("KUBECONFIG", t.TempDir()+"/missing")
	if code, _, stderr := doctorRun(); code != exitError || !strings.Contains(stderr, "load kubeconfig") {
		t.Errorf("no kubeconfig: exit %d, %s", code, stderr)
	}
}
