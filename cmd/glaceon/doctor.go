package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/target"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/doctor"
	"github.com/glaceon/glaceon/webhook/peers"
)

// doctorTimeout bounds one `glaceon doctor` run.
const doctorTimeout = time.Minute

// errChecksFailed makes the exit code 1 once the results are printed.
var errChecksFailed = errors.New("some checks failed")

func runDoctor(env *cliEnv, args []string) error {
	const usage = "glaceon doctor [pod NAME -n NAMESPACE] [--tunnel [--target HOST:PORT]] [flags]"
	var podName string
	if len(args) > 0 && args[0] == "pod" {
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return usagef("doctor pod: missing pod name; usage: %s", usage)
		}
		podName, args = args[1], args[2:]
	}
	fs := newFlagSet(env, "doctor", usage)
	output := fs.String("o", "text", "output: text or json")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: as kubectl finds it, $KUBECONFIG or ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context (default: the current one)")
	podNamespace := fs.String("n", "", "the pod's namespace (doctor pod; default: the context's namespace)")
	opts := doctor.Options{}
	fs.StringVar(&opts.Namespace, "glaceon-namespace", "glaceon-system", "namespace glaceon is installed in")
	fs.StringVar(&opts.ProbeNamespace, "probe-namespace", "default", "namespace of the dry-run pod")
	fs.DurationVar(&opts.StuckAfter, "stuck-after", 5*time.Minute, "report FlyPeers in Provisioning or Releasing for longer than this")
	fs.StringVar(&opts.PeerPrefix, "peer-prefix", "", "the manager's --peer-prefix, for Fly peers without a FlyPeer (default: from the manager Deployment's arguments, else "+peers.DefaultPrefix+")")
	fs.StringVar(&opts.ClusterName, "cluster-name", "", "the manager's --cluster-name (default: from the manager Deployment's arguments, else the kube-system namespace's hash)")
	var to tunnelOptions
	tunnel := fs.Bool("tunnel", false, "also bring up a tunnel from this process: a temporary Fly peer (FLY_API_TOKEN), handshake, Fly DNS through it; the peer is removed again")
	fs.StringVar(&to.org, "org", "", "Fly org of the temporary peer (--tunnel; default: the default FlyOrg's slug)")
	fs.StringVar(&to.region, "region", "", "gateway region of the temporary peer (--tunnel; default: the nearest)")
	fs.StringVar(&to.transport, "tunnel-transport", "auto", "auto, udp or websocket (--tunnel)")
	fs.DurationVar(&to.timeout, "tunnel-timeout", 30*time.Second, "how long to wait for the handshake and Fly DNS (--tunnel)")
	targetFlag := fs.String("target", "", "with --tunnel, also open a TCP connection to HOST:PORT (e.g. myapp.flycast:80) through the tunnel")
	skip := fs.String("skip", "", "comma-separated checks that do not apply, reported as warnings (e.g. manager-deployment for a manager run out of cluster)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *skip != "" {
		opts.Skip = strings.Split(*skip, ",")
	}
	if *targetFlag != "" {
		if !*tunnel {
			return usagef("doctor: --target needs --tunnel (it is dialled through doctor's temporary tunnel)")
		}
		t, err := target.ParseHostPort(*targetFlag)
		if err != nil {
			return usagef("doctor: --target: %v", err)
		}
		to.target = &t
	}
	if *output != "text" && *output != "json" {
		return usagef("doctor: -o %q: want text or json", *output)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: *kubeContext})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig (as kubectl does; --kubeconfig or $KUBECONFIG): %w", err)
	}
	if podName != "" && *podNamespace == "" {
		if *podNamespace, _, err = loader.Namespace(); err != nil {
			return fmt.Errorf("kubeconfig namespace: %w", err)
		}
	}
	scheme := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, glaceonv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("connect to the API server %s: %w", cfg.Host, err)
	}
	// Ctrl-C cancels the checks; the temporary peer is still removed.
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, doctorTimeout)
	defer cancel()
	opts.RESTConfig = cfg
	// The checks ask the Fly API with each FlyOrg's token; only its base
	// comes from here.
	opts.Fly.BaseURL = os.Getenv(flyapi.EnvBaseURL)
	d, err := doctor.New(c, opts)
	if err != nil {
		return err
	}
	var results []doctor.Result
	if podName != "" {
		results = d.Pod(ctx, *podNamespace, podName)
	} else {
		results = d.All(ctx)
	}
	if *tunnel {
		results = append(results, checkTunnel(ctx, c, to)...)
	}
	if *output == "json" {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		printResults(env.stdout, results)
	}
	if doctor.Failed(results) {
		return errChecksFailed
	}
	return nil
}

// printResults prints one line per check under its group, with cause and
// fix indented under a check that is not OK.
func printResults(w io.Writer, results []doctor.Result) {
	group := ""
	var failed, warned int
	for _, r := range results {
		if r.Group != group {
			if group != "" {
				fmt.Fprintln(w)
			}
			group = r.Group
			fmt.Fprintln(w, group)
		}
		fmt.Fprintf(w, "  %s %s: %s\n", r.Status.Symbol(), r.Check, r.Message)
		if r.Status != doctor.OK {
			fmt.Fprintf(w, "      cause: %s\n      fix:   %s\n", r.Cause, r.Fix)
		}
		switch r.Status {
		case doctor.Fail:
			failed++
		case doctor.Warn:
			warned++
		}
	}
	fmt.Fprintf(w, "\n%d checks: %d failed, %d warnings\n", len(results), failed, warned)
}
