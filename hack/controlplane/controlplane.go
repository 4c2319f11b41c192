// Package controlplane starts a real local Kubernetes control plane for
// tests and the demo: etcd and kube-apiserver through controller-runtime's
// envtest, plus kube-controller-manager, so that owner references are
// honoured by the garbage collector and Deployments really create
// ReplicaSets and pods (with generateName and no UID at admission, which is
// the shape the webhook must handle). There is no scheduler and no kubelet:
// pods are admitted and stay Pending.
//
// The binaries come from hack/control-plane.sh, which builds them from the
// Go module proxy into a versioned cache.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Version is the Kubernetes version hack/control-plane.sh builds.
const Version = "1.37.2"

// DefaultControllers are the kube-controller-manager controllers the tests
// rely on: ownerReferences, Deployments → ReplicaSets → Pods, namespaces,
// the stock edit/view roles (aggregated) and resource quotas.
var DefaultControllers = []string{
	"clusterrole-aggregation-controller",
	"resourcequota-controller",
	"garbage-collector-controller",
	"deployment-controller",
	"replicaset-controller",
	"namespace-controller",
	"disruption-controller",
}

// Options configures Start.
type Options struct {
	// AssetsDir holds etcd, kube-apiserver, kube-controller-manager and
	// kubectl. Empty means AssetsDir().
	AssetsDir string
	// CRDDirectoryPaths are installed once the API server is up.
	CRDDirectoryPaths []string
	// WebhookInstallOptions registers webhooks served by the test process.
	WebhookInstallOptions envtest.WebhookInstallOptions
	// Controllers overrides DefaultControllers; set NoControllerManager to
	// run without kube-controller-manager at all.
	Controllers         []string
	NoControllerManager bool
	// Output receives the control-plane processes' logs; nil discards them.
	Output io.Writer
}

// ControlPlane is a running etcd + kube-apiserver + kube-controller-manager.
type ControlPlane struct {
	Env *envtest.Environment
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// KubeconfigPath is an admin kubeconfig file, for kubectl and processes.
	KubeconfigPath string
	AssetsDir      string

	dir      string
	kcm      *exec.Cmd
	kcmDone  chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// AssetsDir returns the directory holding the control-plane binaries:
// KUBEBUILDER_ASSETS, else GLACEON_K8S_ASSETS, else the default cache of
// hack/control-plane.sh. It fails with the command to run when a binary is
// missing.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = os.Getenv("GLACEON_K8S_ASSETS")
	}
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find the control-plane cache: %w", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "glaceon", "k8s", Version)
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("control-plane binary %s missing in %s: run `hack/control-plane.sh` (make test does) to build it", bin, dir)
		}
	}
	return dir, nil
}

// Start brings up the control plane. Call Stop when done.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, retErr error) {
	assets := opts.AssetsDir
	if assets == "" {
		var err error
		if assets, err = AssetsDir(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "glaceon-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("create control-plane work dir: %w", err)
	}
	cp := &ControlPlane{AssetsDir: assets, dir: dir}
	defer func() {
		if retErr != nil {
			_ = cp.Stop()
		}
	}()

	cp.Env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing:    len(opts.CRDDirectoryPaths) > 0,
		WebhookInstallOptions:    opts.WebhookInstallOptions,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	if opts.Output != nil {
		cp.Env.ControlPlane.GetAPIServer().Out = opts.Output
		cp.Env.ControlPlane.GetAPIServer().Err = opts.Output
	}
	if cp.Config, err = cp.Env.Start(); err != nil {
		return nil, fmt.Errorf("start etcd and kube-apiserver from %s: %w", assets, err)
	}

	admin, err := cp.Env.AddUser(envtest.User{Name: "glaceon-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("create admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("render admin kubeconfig: %w", err)
	}
	cp.KubeconfigPath = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, kubeconfig, 0o600); err != nil {
		return nil, fmt.Errorf("write admin kubeconfig: %w", err)
	}
	// The admin user's config carries a client certificate, which is what
	// the controllers and kubectl need.
	cp.Config = admin.Config()

	if !opts.NoControllerManager {
		controllers := opts.Controllers
		if controllers == nil {
			controllers = DefaultControllers
		}
		if err := cp.startControllerManager(ctx, controllers, opts.Output); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

func (cp *ControlPlane) startControllerManager(ctx context.Context, controllers []string, out io.Writer) error {
	port, err := FreePort()
	if err != nil {
		return fmt.Errorf("pick a port for kube-controller-manager: %w", err)
	}
	args := []string{
		"--kubeconfig=" + cp.KubeconfigPath,
		"--authentication-kubeconfig=" + cp.KubeconfigPath,
		"--authorization-kubeconfig=" + cp.KubeconfigPath,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(cp.dir, "kcm-certs"),
		"--use-service-account-credentials=false",
		"--controllers=" + strings.Join(controllers, ","),
		// Tests create and delete quickly; react quickly too.
		"--concurrent-deployment-syncs=5",
		"--concurrent-replicaset-syncs=5",
		"--concurrent-gc-syncs=5",
	}
	cmd := exec.Command(filepath.Join(cp.AssetsDir, "kube-controller-manager"), args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a test binary killed by a timeout does not
	// leave it behind holding the API server's attention.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	cp.kcm = cmd
	cp.kcmDone = make(chan struct{})
	go func() { _ = cmd.Wait(); close(cp.kcmDone) }()

	// Ready when it answers /healthz on its secure port.
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-cp.kcmDone:
			return fmt.Errorf("kube-controller-manager exited at start (%v); run with Options.Output to see its log", cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("wait for kube-controller-manager: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("kube-controller-manager did not listen within 1m")
		}
	}
}

// Stop stops kube-controller-manager, kube-apiserver and etcd and removes
// their files. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		if cp.kcm != nil && cp.kcm.Process != nil {
			_ = cp.kcm.Process.Signal(syscall.SIGTERM)
			select {
			case <-cp.kcmDone:
			case <-time.After(10 * time.Second):
				_ = cp.kcm.Process.Kill()
				<-cp.kcmDone
			}
		}
		if cp.Env != nil {
			if err := cp.Env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop envtest: %w", err))
			}
		}
		if cp.dir != "" {
			errs = append(errs, os.RemoveAll(cp.dir))
		}
		cp.stopErr = errors.Join(errs...)
	})
	return cp.stopErr
}

// StartForTest starts a control plane for tb and stops it in tb.Cleanup.
// A missing binary fails the test with the command that builds it: tests
// that need a control plane are never silently skipped.
func StartForTest(tb testing.TB, opts Options) *ControlPlane {
	tb.Helper()
	if opts.Output == nil && os.Getenv("GLACEON_CONTROLPLANE_LOG") != "" {
		opts.Output = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("start control plane: %v", err)
	}
	tb.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			tb.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}

// FreePort returns a TCP port free on 127.0.0.1 right now, for local
// servers of the control plane, the manager and the demo.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
