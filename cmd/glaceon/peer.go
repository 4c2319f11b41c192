package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// peerTimeout bounds one `glaceon peer` command, retries included.
const peerTimeout = 2 * time.Minute

func runPeer(env *cliEnv, args []string) error {
	const usage = "glaceon peer create|list|remove [flags]"
	if len(args) == 0 {
		return usagef("peer: missing subcommand; usage: %s", usage)
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "create":
		return runPeerCreate(env, rest)
	case "list":
		return runPeerList(env, rest)
	case "remove":
		return runPeerRemove(env, rest)
	case "-h", "--help", "help":
		fmt.Fprintf(env.stderr, "Usage: %s\n", usage)
		return nil
	}
	return usagef("peer: unknown subcommand %q; usage: %s", sub, usage)
}

func runPeerCreate(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "peer create", "glaceon peer create --org ORG [--region R] --name NAME [--out FILE] [--force]")
	org := fs.String("org", "", "Fly organization slug (required)")
	region := fs.String("region", "", "WireGuard gateway region (default: the gateway nearest to this machine)")
	name := fs.String("name", "", "peer name: lower-case letters, digits and dashes, at most 63 characters (required)")
	network := fs.String("network", "", "custom 6PN network name (default: the org's default network)")
	out := fs.String("out", "", "write the wg-quick file here with mode 0600 (default: stdout)")
	force := fs.Bool("force", false, "overwrite --out if it exists")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *org == "" {
		return usagef("peer create: --org is required (the Fly organization slug, see `fly orgs list`)")
	}
	if *name == "" {
		return usagef("peer create: --name is required (e.g. --name k8s-laptop-1)")
	}
	if err := flyapi.ValidatePeerName(*name); err != nil {
		return usageError{msg: "peer create: --name: " + err.Error()}
	}
	// Refuse an existing file before the peer exists: a private key that
	// cannot be written is a peer leaked.
	if *out != "" && !*force {
		if _, err := os.Stat(*out); err == nil {
			return usagef("peer create: --out %s already exists; pass --force to overwrite it", *out)
		}
	}

	ctx, cancel := commandContext()
	defer cancel()
	client, opts, o, err := connectOrg(ctx, *org)
	if err != nil {
		return err
	}
	if *region == "" {
		if *region, err = client.NearestGatewayRegion(ctx); err != nil {
			return fmt.Errorf("find the nearest gateway region (or pass --region): %w", explainFlyError(err, opts, *org))
		}
	}
	keys, err := wgquick.GenerateKeyPair()
	if err != nil {
		return fmt.Errorf("generate key pair: %w", err)
	}
	created, err := client.AddPeer(ctx, flyapi.AddPeerInput{Org: *o, Name: *name, PublicKey: keys.Public, Region: *region, Network: *network})
	if err != nil {
		return fmt.Errorf("create peer %q: %w", *name, explainFlyError(err, opts, *org))
	}
	cfg, err := flyapi.NewWireGuardConfig(keys.Private, *created, opts.GatewayPort)
	if err == nil {
		err = writeConfig(env, *out, cfg.Render())
	}
	if err != nil {
		// The peer is useless without its private key: take it back.
		if rmErr := client.RemovePeer(context.WithoutCancel(ctx), *o, *name); rmErr != nil {
			return fmt.Errorf("%w; removing the new peer %q also failed (remove it with `glaceon peer remove --org %s --name %s`): %v", err, *name, *org, *name, rmErr)
		}
		return fmt.Errorf("%w (the new peer was removed again)", err)
	}
	if *out != "" {
		fmt.Fprintf(env.stderr, "created peer %s in %s (region %s, address %s); wrote %s\n", *name, *org, *region, created.PeerIP, *out)
	}
	return nil
}

// writeConfig writes the wg-quick file (it holds the private key) with mode
// 0600 through a temporary file, so a reader never sees half of it.
func writeConfig(env *cliEnv, path string, data []byte) error {
	if path == "" || path == "-" {
		_, err := env.stdout.Write(data)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".glaceon-peer-*.conf")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func runPeerList(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "peer list", "glaceon peer list --org ORG [--json]")
	org := fs.String("org", "", "Fly organization slug (required)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *org == "" {
		return usagef("peer list: --org is required (the Fly organization slug, see `fly orgs list`)")
	}
	ctx, cancel := commandContext()
	defer cancel()
	client, opts, err := newFlyClient()
	if err != nil {
		return err
	}
	peers, err := client.ListPeers(ctx, *org)
	if err != nil {
		return fmt.Errorf("list peers: %w", explainFlyError(err, opts, *org))
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if peers == nil {
			peers = []flyapi.Peer{}
		}
		return enc.Encode(peers)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREGION\tPEER IP")
	for _, p := range peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, p.Region, p.PeerIP)
	}
	return tw.Flush()
}

func runPeerRemove(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "peer remove", "glaceon peer remove --org ORG --name NAME")
	org := fs.String("org", "", "Fly organization slug (required)")
	name := fs.String("name", "", "peer name (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *org == "" || *name == "" {
		return usagef("peer remove: --org and --name are required")
	}
	ctx, cancel := commandContext()
	defer cancel()
	client, opts, o, err := connectOrg(ctx, *org)
	if err != nil {
		return err
	}
	if err := client.RemovePeer(ctx, *o, *name); err != nil {
		return fmt.Errorf("remove peer %q: %w", *name, explainFlyError(err, opts, *org))
	}
	fmt.Fprintf(env.stderr, "removed peer %s from %s (or it was already gone)\n", *name, *org)
	return nil
}

func commandContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	return ctx, func() { cancel(); stop() }
}

func newFlyClient() (*flyapi.Client, flyapi.Options, error) {
	opts, err := flyapi.OptionsFromEnv()
	if err != nil {
		return nil, opts, err
	}
	client, err := flyapi.New(opts)
	return client, opts, err
}

// explainFlyError adds what the user can do about the common failures.
func explainFlyError(err error, opts flyapi.Options, org string) error {
	switch {
	case flyapi.IsUnauthorized(err):
		return fmt.Errorf("the Fly API rejected the token from %s; create a token that may manage WireGuard peers in org %q (`fly tokens create org %s`) and export it: %w", opts.TokenSource, org, org, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the Fly API at %s did not answer within %s; retrying is safe: %w", opts.BaseURL, peerTimeout, err)
	}
	return err
}

// connectOrg is the Fly client from the environment and the organization
// slug names.
func connectOrg(ctx context.Context, slug string) (*flyapi.Client, flyapi.Options, *flyapi.Organization, error) {
	client, opts, err := newFlyClient()
	if err != nil {
		return nil, opts, nil, err
	}
	o, err := client.Organization(ctx, slug)
	if flyapi.IsNotFound(err) {
		return nil, opts, nil, fmt.Errorf("organization %q not found: check the slug with `fly orgs list` (the token must belong to that org): %w", slug, err)
	}
	if err != nil {
		return nil, opts, nil, explainFlyError(err, opts, slug)
	}
	return client, opts, o, nil
}
