package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/peers"
)

// flyCallTimeout bounds each of doctor's Fly API calls.
const flyCallTimeout = 15 * time.Second

// maxOrphanNames bounds the names listed in the orphans check.
const maxOrphanNames = 10

// checkFlySide asks the Fly API itself, with each FlyOrg's token, read-only
// calls only: each token accepted (the org's peer list for the FlyOrgs the
// sweeper lists, an org lookup for the others), and the Fly peers with this
// cluster's names that no FlyPeer names, which the manager's sweeper
// removes. The matching and the choice of FlyOrgs are the sweeper's own
// (peers.OrgsToList, peers.Namer.Orphans). Tokens are read from their
// Secrets and never printed.
func (d *Doctor) checkFlySide(ctx context.Context, orgs []glaceonv1alpha1.FlyOrg, flyPeers []glaceonv1alpha1.FlyPeer) []Result {
	if len(orgs) == 0 {
		return nil // the flyorgs check says so; there is no token to ask with
	}
	registry := flyorg.NewRegistry(d.opts.Namespace, d.c, d.c, d.opts.Fly)
	listers := map[string]bool{}
	for _, org := range peers.OrgsToList(orgs) {
		listers[org.Name] = true
	}
	var out []Result
	listed := map[string][]flyapi.Peer{} // by FlyOrg name
	var notListed []string
	for i := range orgs {
		org := &orgs[i]
		r, list := d.checkToken(ctx, registry, org, listers[org.Name])
		out = append(out, r)
		switch {
		case list != nil:
			listed[org.Name] = list
		case listers[org.Name]:
			notListed = append(notListed, org.Name)
		}
	}
	return append(out, d.checkOrphans(ctx, listed, notListed, flyPeers))
}

// checkToken makes one read-only call with org's token: the peer list when
// the sweeper lists org's org through it (returned), else an org lookup.
func (d *Doctor) checkToken(ctx context.Context, registry *flyorg.Registry, org *glaceonv1alpha1.FlyOrg, list bool) (Result, []flyapi.Peer) {
	slug := org.SlugOrName()
	fly, err := registry.Client(ctx, org)
	if err != nil {
		var te *flyorg.TokenError
		if errors.As(err, &te) && apierrors.IsForbidden(te.Err) {
			return warned(GroupOrgs, CheckFlyOrgToken, fmt.Sprintf("token of FlyOrg %s not checked", org.Name), te.Message,
				fmt.Sprintf("doctor needs get on Secret %s in %s to ask the Fly API itself (docs/doctor.md)", org.Spec.TokenSecretRef.Name, d.opts.Namespace)), nil
		}
		return failed(GroupOrgs, CheckFlyOrgToken, fmt.Sprintf("token of FlyOrg %s unusable", org.Name), err.Error(),
			fmt.Sprintf("put a Fly token of org %s in the Secret (`fly tokens create org -o %s`)", slug, slug)), nil
	}
	cctx, cancel := context.WithTimeout(ctx, flyCallTimeout)
	defer cancel()
	var (
		peerList []flyapi.Peer
		what     string
	)
	if list {
		peerList, err = fly.ListPeers(cctx, slug)
		what = fmt.Sprintf("listed the %d peers of org %s", len(peerList), slug)
	} else {
		_, err = fly.Organization(cctx, slug)
		what = "looked up org " + slug
	}
	switch {
	case err == nil:
		if list && peerList == nil {
			peerList = []flyapi.Peer{}
		}
		return ok(GroupOrgs, CheckFlyOrgToken, "token of FlyOrg %s accepted by the Fly API (read-only: %s)", org.Name, what), peerList
	case flyapi.IsUnauthorized(err):
		return failed(GroupOrgs, CheckFlyOrgToken, fmt.Sprintf("the Fly API rejected the token of FlyOrg %s", org.Name), err.Error(),
			fmt.Sprintf("put a valid token in Secret %s (`fly tokens create org -o %s`); the manager picks it up within seconds", org.Spec.TokenSecretRef.Name, slug)), nil
	case flyapi.IsNotFound(err):
		return failed(GroupOrgs, CheckFlyOrgToken, fmt.Sprintf("the token of FlyOrg %s cannot see org %s", org.Name, slug), err.Error(),
			fmt.Sprintf("set spec.slug to an org the token belongs to (`fly orgs list`), or use a token of org %s", slug)), nil
	}
	return warned(GroupOrgs, CheckFlyOrgToken, fmt.Sprintf("the Fly API did not answer doctor for FlyOrg %s", org.Name), err.Error(),
		"retry; if it persists the Fly API is unreachable from here (FLY_API_BASE_URL, proxy settings)"), nil
}

// checkOrphans reports the listed Fly peers of this cluster without a
// FlyPeer.
func (d *Doctor) checkOrphans(ctx context.Context, listed map[string][]flyapi.Peer, notListed []string, flyPeers []glaceonv1alpha1.FlyPeer) Result {
	namer, source, err := d.namer(ctx)
	if err != nil {
		return warned(GroupOrgs, CheckFlyPeersOrphaned, "Fly peers without a FlyPeer not checked", err.Error(),
			"pass --peer-prefix and --cluster-name as the manager has them")
	}
	if len(listed) == 0 {
		cause := "no FlyOrg's org is found yet"
		if len(notListed) > 0 {
			cause = "no org could be listed: see the token checks of " + strings.Join(notListed, ", ")
		}
		return warned(GroupOrgs, CheckFlyPeersOrphaned, "Fly peers without a FlyPeer not checked", cause, "fix the FlyOrgs first")
	}
	known := make(map[string]bool, len(flyPeers))
	for _, fp := range flyPeers {
		known[fp.Name] = true
	}
	var names []string
	total := 0
	for _, list := range listed {
		total += len(list)
		for _, p := range namer.Orphans(list, known) {
			names = append(names, p.Name)
		}
	}
	scope := fmt.Sprintf("names %s (%s), %d Fly peers in %d orgs", namer.Pattern(), source, total, len(listed))
	if len(names) == 0 {
		return ok(GroupOrgs, CheckFlyPeersOrphaned, "no Fly peer of this cluster without a FlyPeer (%s)", scope)
	}
	shown := names
	if len(shown) > maxOrphanNames {
		shown = append(shown[:maxOrphanNames:maxOrphanNames], fmt.Sprintf("… %d more", len(names)-maxOrphanNames))
	}
	return warned(GroupOrgs, CheckFlyPeersOrphaned, fmt.Sprintf("%d Fly peer(s) of this cluster have no FlyPeer: %s", len(names), strings.Join(shown, ", ")),
		"left by an admission or a removal that did not finish; the manager's sweeper removes them at its next sweep (every --sweep-interval, 1m)",
		fmt.Sprintf("nothing to do unless they stay: then the sweeper fails (`kubectl -n %s logs deployment/%s | grep sweep`)", d.opts.Namespace, d.opts.Deployment))
}

// namer is the sweeper's Namer for this cluster: the peer prefix and
// cluster name from Options, else from the manager Deployment's arguments,
// else the manager's defaults (peers.DefaultPrefix, the kube-system UID's
// hash). source says where they came from.
func (d *Doctor) namer(ctx context.Context) (*peers.Namer, string, error) {
	prefix, cluster := d.opts.PeerPrefix, d.opts.ClusterName
	var from []string
	if prefix != "" || cluster != "" {
		from = append(from, "doctor's flags")
	}
	var dep appsv1.Deployment
	if prefix == "" || cluster == "" {
		if err := d.c.Get(ctx, client.ObjectKey{Namespace: d.opts.Namespace, Name: d.opts.Deployment}, &dep); err == nil {
			p, c := managerFlag(&dep, "peer-prefix"), managerFlag(&dep, "cluster-name")
			if (prefix == "" && p != "") || (cluster == "" && c != "") {
				from = append(from, "the manager Deployment's arguments")
			}
			if prefix == "" {
				prefix = p
			}
			if cluster == "" {
				cluster = c
			}
		}
	}
	if prefix == "" || cluster == "" {
		from = append(from, "the manager's defaults")
	}
	source := "from " + strings.Join(from, " and ")
	if prefix == "" {
		prefix = peers.DefaultPrefix
	}
	if cluster == "" {
		var err error
		if cluster, err = peers.DiscoverClusterHash(ctx, d.c); err != nil {
			return nil, "", err
		}
	}
	n, err := peers.NewNamer(prefix, cluster)
	return n, source, err
}

// managerFlag is the value of --name in the Deployment's first container's
// arguments ("--name=v" or "--name v"), or "".
func managerFlag(dep *appsv1.Deployment, name string) string {
	cs := dep.Spec.Template.Spec.Containers
	if len(cs) == 0 {
		return ""
	}
	args := append(append([]string(nil), cs[0].Command...), cs[0].Args...)
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if v, found := strings.CutPrefix(a, name+"="); found {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
