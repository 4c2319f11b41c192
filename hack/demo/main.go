// Command demo is `make demo`: glaceon's main job end to end on one machine,
// with no cluster and no Fly account.
//
//  1. a real control plane (etcd, kube-apiserver, kube-controller-manager);
//  2. the Fly side: the built-in double (API + userspace WireGuard gateway),
//     or any API speaking Fly's contract when FLY_API_BASE_URL and
//     FLY_API_TOKEN are set (GLACEON_DEMO_ORG, GLACEON_DEMO_REGION and
//     GLACEON_DEMO_TARGET choose org, region and target);
//  3. the token Secret and a FlyOrg (the cluster admin's install step), and
//     `glaceon manager` out of cluster, its webhook registered with the API
//     server; the FlyOrg turns Ready once the manager checked the token;
//  4. a Deployment annotated glaceon.fly/target, whose pod is injected;
//  5. the injected sidecar run as a local process from the pod's spec and
//     Secret (there is no kubelet here), and a request through the tunnel;
//  6. `kubectl get flyorgs,flypeers`: the cluster's view of its Fly peers;
//  7. `glaceon doctor pod` on the pod: injected, its FlyPeer;
//  8. the Deployment deleted: FlyPeer, Fly peer and Secret gone;
//  9. `glaceon doctor`: every install and orgs check passes.
//
// It takes the paths of the glaceon and glaceon-sidecar binaries as flags
// (hack/demo.sh builds them).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/hack/controlplane"
	"github.com/glaceon/glaceon/hack/localpod"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
)

const demoNamespace = "demo"

type demo struct {
	glaceonBin, sidecarBin string
	work                   string
	c                      client.Client
	fly                    *flyapi.Client
	org, region, target    string
	gatewayPort            int
	blockUDP               bool     // the double drops UDP: the sidecar must use WebSocket
	env                    []string // FLY_* for the manager (no token)
	token                  string   // goes into the FlyOrg's Secret
	cp                     *controlplane.ControlPlane
	step                   int
}

func main() {
	var d demo
	flag.StringVar(&d.glaceonBin, "glaceon", "bin/glaceon", "glaceon binary")
	flag.StringVar(&d.sidecarBin, "sidecar", "bin/glaceon-sidecar", "glaceon-sidecar binary")
	flag.BoolVar(&d.blockUDP, "block-udp", os.Getenv("GLACEON_DEMO_BLOCK_UDP") == "1",
		"block UDP at the built-in double's gateway, as egress that allows only TCP 443 does (env GLACEON_DEMO_BLOCK_UDP=1)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo finished: a pod reached a private Fly app through its own WireGuard peer, and the peer went away with the pod.")
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Printf("\n==> %d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func detail(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.work, err = os.MkdirTemp("", "glaceon-demo-"); err != nil {
		return err
	}
	defer os.RemoveAll(d.work)
	// startFly exports the double's WebSocket port for the sidecar child.
	// Left set, the next double made in this process (the demo's test runs
	// the demo three times) would listen on that port while the closing
	// double may still hold it.
	if prev, had := os.LookupEnv(flyapitest.EnvWebSocketPort); had {
		defer os.Setenv(flyapitest.EnvWebSocketPort, prev)
	} else {
		defer os.Unsetenv(flyapitest.EnvWebSocketPort)
	}

	d.say("Starting a local control plane: etcd, kube-apiserver, kube-controller-manager (v%s)", controlplane.Version)
	cp, err := controlplane.Start(ctx, controlplane.Options{CRDDirectoryPaths: []string{filepath.Join(managertest.RepoRoot(), "deploy", "crd")}})
	if err != nil {
		return err
	}
	defer cp.Stop()
	d.cp = cp
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := glaceonv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if d.c, err = client.New(cp.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	detail("API server %s", cp.Config.Host)

	if err := d.startFly(ctx); err != nil {
		return err
	}
	stopManager, err := d.startManager(ctx, cp)
	if err != nil {
		return err
	}
	defer stopManager()

	pod, err := d.createWorkload(ctx)
	if err != nil {
		return err
	}
	if err := d.runSidecar(ctx, pod); err != nil {
		return err
	}
	d.say("What the cluster knows of its Fly peers")
	if err := d.kubectl(ctx, "get", "flyorgs,flypeers"); err != nil {
		return err
	}
	// The sidecar ran as a local process on loopback, which the API
	// server's pod proxy does not reach (no kubelet, no pod IP): those two
	// checks are skipped here; webhook/doctor's tests run them for real.
	d.say("`glaceon doctor pod`: is this pod injected, and its FlyPeer? (no kubelet: the sidecar checks through the pod proxy are skipped)")
	if err := d.doctor(ctx, "pod", pod.Name, "-n", demoNamespace, "--skip", "pod-sidecar-ready,pod-sidecar-tunnel"); err != nil {
		return err
	}
	if err := d.deleteWorkload(ctx, pod); err != nil {
		return err
	}
	d.say("`glaceon doctor`: the install and the FlyOrgs (the manager runs out of cluster here: no Deployment)")
	return d.doctor(ctx, "--skip", "manager-deployment")
}

// doctor runs `glaceon doctor args...` against the control plane and
// prints its report; a failed check fails the demo.
func (d *demo) doctor(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, d.glaceonBin, append([]string{"doctor"}, args...)...)
	// d.env points doctor's own Fly calls (token, orphans) at the demo's API.
	cmd.Env = append(os.Environ(), append(d.env, "KUBECONFIG="+d.cp.KubeconfigPath)...)
	out, err := cmd.CombinedOutput()
	detail("$ glaceon doctor %s", strings.Join(args, " "))
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		detail("%s", line)
	}
	if err != nil {
		return fmt.Errorf("glaceon doctor %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// startFly starts the built-in Fly double, or uses the API named by
// FLY_API_BASE_URL and FLY_API_TOKEN.
func (d *demo) startFly(ctx context.Context) error {
	d.org = envOr("GLACEON_DEMO_ORG", "personal")
	d.region = os.Getenv("GLACEON_DEMO_REGION")
	d.target = envOr("GLACEON_DEMO_TARGET", "twi-ollama.flycast")
	opts := flyapi.Options{}
	if os.Getenv("FLY_API_BASE_URL") != "" && os.Getenv("FLY_API_TOKEN") != "" {
		var err error
		if opts, err = flyapi.OptionsFromEnv(); err != nil {
			return err
		}
		d.say("Using the Fly API at %s (org %s, target %s)", opts.BaseURL, d.org, d.target)
	} else {
		d.say("Starting the Fly double: GraphQL API + userspace WireGuard gateway on loopback")
		fly, err := flyapitest.NewServer(flyapitest.Options{})
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); fly.Close() }()
		// The sidecar (a child process) reaches the double's WebSocket here
		// instead of port 443.
		if err := os.Setenv(flyapitest.EnvWebSocketPort, strconv.Itoa(fly.WebSocketPort())); err != nil {
			return err
		}
		if d.blockUDP {
			fly.BlockUDP(true)
			detail("UDP to the gateway is blocked: only WireGuard over WebSocket (wss, port %d here) gets through", fly.WebSocketPort())
		}
		opts = flyapi.Options{BaseURL: fly.URL(), Token: fly.Token(), TokenSource: "the demo's Fly double", GatewayPort: fly.GatewayPort()}
		detail("API %s, gateway udp/%d, apps %s", fly.URL(), fly.GatewayPort(), strings.Join(fly.Apps(), ", "))
	}
	d.gatewayPort = opts.GatewayPort
	d.env = []string{"FLY_API_BASE_URL=" + opts.BaseURL}
	d.token = opts.Token
	if opts.GatewayPort != 0 {
		d.env = append(d.env, "FLY_WG_GATEWAY_PORT="+strconv.Itoa(opts.GatewayPort))
	}
	var err error
	d.fly, err = flyapi.New(opts)
	return err
}

// startManager runs `glaceon manager` and registers its webhook.
func (d *demo) startManager(ctx context.Context, cp *controlplane.ControlPlane) (func(), error) {
	d.say("Starting `glaceon manager` (webhook + controllers) out of cluster")
	port, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	healthPort, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "glaceon-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: demoNamespace}},
	} {
		if err := d.c.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	mwc, err := managertest.WebhookConfiguration(fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	if err := d.c.Create(ctx, mwc); err != nil {
		return nil, fmt.Errorf("register the webhook: %w", err)
	}
	detail("MutatingWebhookConfiguration %q from deploy/webhook, pointed at https://127.0.0.1:%d", mwc.Name, port)
	if err := d.createFlyOrg(ctx); err != nil {
		return nil, err
	}

	logPath := filepath.Join(d.work, "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.glaceonBin, "manager",
		"--namespace=glaceon-system",
		"--default-region="+d.region,
		"--webhook-host=127.0.0.1", "--webhook-port="+strconv.Itoa(port),
		"--webhook-extra-sans=127.0.0.1",
		"--metrics-addr=0", "--health-addr=127.0.0.1:"+strconv.Itoa(healthPort),
		"--peer-prefix=k8s-demo-",
		"--sweep-interval=10s")
	cmd.Env = append(os.Environ(), append(d.env, "KUBECONFIG="+cp.KubeconfigPath)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start glaceon manager: %w", err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		logFile.Close()
	}
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort)
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		resp, err := http.Get(readyz)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("glaceon manager did not become ready (log: %s):\n%s", logPath, tail(logPath, 20))
	}
	detail("ready: serving certificate issued by the manager, caBundle patched (log: %s)", logPath)
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var org glaceonv1alpha1.FlyOrg
		if err := d.c.Get(ctx, client.ObjectKey{Name: d.org}, &org); err != nil {
			return false, nil
		}
		return meta.IsStatusConditionTrue(org.Status.Conditions, glaceonv1alpha1.ConditionReady), nil
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("FlyOrg %s did not become Ready (log: %s):\n%s", d.org, logPath, tail(logPath, 20))
	}
	if err := d.kubectl(ctx, "get", "flyorgs"); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// createFlyOrg is the cluster admin's install step: the token Secret in
// glaceon's namespace and a FlyOrg naming it (deploy/flyorg.example.yaml).
func (d *demo) createFlyOrg(ctx context.Context) error {
	d.say("Creating the Fly token Secret and FlyOrg %q (cluster admin's step; the manager has no token of its own)", d.org)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "fly-api-token", Namespace: "glaceon-system"},
		Data:       map[string][]byte{"token": []byte(d.token)},
	}
	org := &glaceonv1alpha1.FlyOrg{
		ObjectMeta: metav1.ObjectMeta{Name: d.org, Annotations: map[string]string{glaceonv1alpha1.AnnotationDefaultFlyOrg: "true"}},
		Spec: glaceonv1alpha1.FlyOrgSpec{
			TokenSecretRef: glaceonv1alpha1.SecretKeyRef{Name: secret.Name, Key: "token"},
			Namespaces:     []string{"*"},
			DefaultRegion:  d.region,
		},
	}
	for _, obj := range []client.Object{secret, org} {
		if err := d.c.Create(ctx, obj); err != nil {
			return fmt.Errorf("create %s: %w", obj.GetName(), err)
		}
	}
	detail("secret glaceon-system/fly-api-token, FlyOrg %s (namespaces *, default)", d.org)
	return nil
}

// kubectl runs the control plane's kubectl and prints its output indented.
func (d *demo) kubectl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(d.cp.AssetsDir, "kubectl"), append([]string{"--kubeconfig", d.cp.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	detail("$ kubectl %s", strings.Join(args, " "))
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		detail("%s", line)
	}
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (d *demo) createWorkload(ctx context.Context) (*corev1.Pod, error) {
	d.say("Applying a Deployment annotated %s: %s", inject.AnnotationTarget, d.target)
	labels := map[string]string{"app": "hello-fly"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "hello-fly", Namespace: demoNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{inject.AnnotationTarget: d.target}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "curlimages/curl",
					Command: []string{"sh", "-c", "while sleep 5; do curl -s http://" + d.target + "/; done"},
				}}},
			},
		},
	}
	if err := d.c.Create(ctx, deploy); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := d.c.List(ctx, &pods, client.InNamespace(demoNamespace)); err != nil {
			return false, err
		}
		return len(pods.Items) > 0, nil
	})
	if err != nil {
		var events corev1.EventList
		_ = d.c.List(ctx, &events, client.InNamespace(demoNamespace))
		for _, e := range events.Items {
			detail("event %s: %s", e.Reason, e.Message)
		}
		return nil, fmt.Errorf("no pod was admitted for the Deployment: %w", err)
	}
	pod := &pods.Items[0]
	sidecar := localpod.SidecarContainer(pod)
	if sidecar == nil {
		return nil, fmt.Errorf("pod %s was admitted without the sidecar", pod.Name)
	}
	detail("pod %s admitted by the webhook:", pod.Name)
	detail("  peer         %s = %s", inject.AnnotationPeer, pod.Annotations[inject.AnnotationPeer])
	detail("  sidecar      init container %q, restartPolicy %s", sidecar.Name, ptr.Deref(sidecar.RestartPolicy, ""))
	detail("  args         %s", strings.Join(sidecar.Args, " "))
	for _, ha := range pod.Spec.HostAliases {
		detail("  hostAliases  %s → %s", strings.Join(ha.Hostnames, ","), ha.IP)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			detail("  volume       %s from Secret %s (the private key stays in the Secret)", v.Name, v.Secret.SecretName)
		}
	}
	peers, err := d.fly.ListPeers(ctx, d.org)
	if err != nil {
		return nil, err
	}
	for _, p := range peers {
		if p.Name == pod.Annotations[inject.AnnotationPeer] {
			detail("Fly side: peer %s, address %s, region %s", p.Name, p.PeerIP, p.Region)
		}
	}
	return pod, nil
}

// runSidecar runs the pod's sidecar as a local process, as the kubelet
// would, and sends a request the way the app would.
func (d *demo) runSidecar(ctx context.Context, pod *corev1.Pod) error {
	d.say("Running the injected sidecar as a local process (no kubelet here) and sending a request through it")
	var secret corev1.Secret
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: localpod.PeerSecretName(pod)}, &secret); err != nil {
		return fmt.Errorf("read the peer Secret: %w", err)
	}
	start := time.Now()
	sc, err := localpod.Start(d.sidecarBin, pod, &secret, d.work)
	if err != nil {
		return err
	}
	defer sc.Stop()
	detail("glaceon-sidecar %s", strings.Join(sc.Args, " "))
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sc.WaitReady(readyCtx); err != nil {
		return fmt.Errorf("%w:\n%s", err, tail(sc.LogPath, 20))
	}
	detail("ready in %s: WireGuard handshake done, Fly DNS answers through the tunnel", time.Since(start).Round(time.Millisecond))
	if resp, err := http.Get(sc.HealthURL + "/readyz"); err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		detail("/readyz: %s", strings.TrimSpace(string(body)))
		if d.blockUDP && !strings.Contains(string(body), "transport=websocket") {
			return fmt.Errorf("UDP is blocked but the sidecar reports %q", strings.TrimSpace(string(body)))
		}
	}

	var podListen, listen string
	for podListen, listen = range sc.Forwards {
		break
	}
	if podListen != listen {
		detail("this user may not bind %s: the sidecar listens on %s instead", podListen, listen)
	}
	host := hostOf(d.target)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/", nil)
	if err != nil {
		return err
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("request through the tunnel: %w (sidecar log %s)", err, sc.LogPath)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	detail("GET http://%s/ (what the app calls; hostAliases sends it to %s) → %s", host, podListen, resp.Status)
	detail("answer: %s", strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unexpected answer %s", resp.Status)
	}
	return nil
}

// hostOf returns the host name of a glaceon.fly/target value's first entry.
func hostOf(target string) string {
	t, errs := inject.ParseTargets(target, nil)
	if len(errs) > 0 || len(t) == 0 {
		return target
	}
	return t[0].Host
}

func (d *demo) deleteWorkload(ctx context.Context, pod *corev1.Pod) error {
	peer := pod.Annotations[inject.AnnotationPeer]
	d.say("Deleting the Deployment: pod → FlyPeer → Fly peer (finalizer) → Secret")
	deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "hello-fly", Namespace: demoNamespace}}
	if err := d.c.Delete(ctx, deploy, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		return err
	}
	// No kubelet: pods are deleted at once, nothing to wait for but the
	// controllers.
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var s corev1.Secret
		err := d.c.Get(ctx, client.ObjectKey{Namespace: demoNamespace, Name: peer}, &s)
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		var fp glaceonv1alpha1.FlyPeer
		if err := d.c.Get(ctx, client.ObjectKey{Name: peer}, &fp); !apierrors.IsNotFound(err) {
			return false, nil
		}
		peers, err := d.fly.ListPeers(ctx, d.org)
		if err != nil {
			return false, nil
		}
		for _, p := range peers {
			if p.Name == peer {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("peer %s still exists after the Deployment was deleted: %w", peer, err)
	}
	detail("FlyPeer %s gone, Fly peer %s gone, Secret %s/%s gone", peer, peer, demoNamespace, peer)
	return nil
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
