package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
)

// Orgs runs the orgs group: FlyOrgs Ready, FlyPeers not stuck.
func (d *Doctor) Orgs(ctx context.Context) []Result {
	var orgs glaceonv1alpha1.FlyOrgList
	if err := d.c.List(ctx, &orgs); err != nil {
		return []Result{failed(GroupOrgs, CheckFlyOrgs, "cannot list FlyOrgs", err.Error(), "check the CRDs are installed and you may list flyorgs")}
	}
	var out []Result
	if len(orgs.Items) == 0 {
		out = append(out, failed(GroupOrgs, CheckFlyOrgs, "no FlyOrg", "annotated pods are refused: no Fly organization is configured",
			"create a token Secret and a FlyOrg (deploy/flyorg.example.yaml)"))
	}
	for i := range orgs.Items {
		out = append(out, d.checkFlyOrg(&orgs.Items[i]))
	}
	var peerList glaceonv1alpha1.FlyPeerList
	if err := d.c.List(ctx, &peerList); err != nil {
		return d.skip(append(out, failed(GroupOrgs, CheckFlyPeersStuck, "cannot list FlyPeers", err.Error(), "check you may list flypeers")))
	}
	out = append(out, d.checkFlySide(ctx, orgs.Items, peerList.Items)...)
	return d.skip(append(out, d.checkStuckPeers(peerList.Items)))
}

func (d *Doctor) checkFlyOrg(org *glaceonv1alpha1.FlyOrg) Result {
	desc := fmt.Sprintf("FlyOrg %s (slug %s, namespaces %s", org.Name, org.SlugOrName(), strings.Join(org.Spec.Namespaces, ","))
	if org.IsDefault() {
		desc += ", default"
	}
	desc += ")"
	ready := meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady)
	if ready != nil && ready.Status == "True" {
		return Result{Group: GroupOrgs, Check: CheckFlyOrgReady, Status: OK, Message: fmt.Sprintf("%s Ready, %d peers", desc, org.Status.Peers)}
	}
	yaml := fmt.Sprintf("`kubectl get flyorg %s -o yaml`", org.Name)
	if ready == nil {
		return failed(GroupOrgs, CheckFlyOrgReady, desc+" has no Ready condition", "the manager has not reconciled it (not running?)", "check the manager runs; then "+yaml)
	}
	cause := ready.Reason + ": " + ready.Message
	secret := org.Spec.TokenSecretRef.Name
	fix := "see " + yaml
	switch ready.Reason {
	case flyorg.ReasonUnauthorized:
		fix = fmt.Sprintf("the Fly API rejected the token: put a valid one in Secret %s (`fly tokens create org -o %s`); it is picked up within seconds", secret, org.SlugOrName())
	case flyorg.ReasonTokenSecretMissing, flyorg.ReasonTokenSecretInvalid:
		fix = fmt.Sprintf("create Secret %s in glaceon's namespace with key %q holding a Fly token", secret, keyOr(org.Spec.TokenSecretRef.Key))
	case flyorg.ReasonOrgNotFound:
		fix = fmt.Sprintf("set spec.slug to an org the token belongs to (`fly orgs list`); now %q", org.SlugOrName())
	case flyorg.ReasonFlyUnavailable:
		fix = "the Fly API did not answer the manager; it retries by itself"
	case flyorg.ReasonDeleting:
		return warned(GroupOrgs, CheckFlyOrgReady, desc+" is being deleted", cause, "it goes once its FlyPeers are gone (with their pods)")
	}
	return failed(GroupOrgs, CheckFlyOrgReady, desc+" is not Ready", cause, fix)
}

func keyOr(k string) string {
	if k == "" {
		return "token"
	}
	return k
}

// checkStuckPeers reports FlyPeers in Provisioning or Releasing for longer
// than StuckAfter.
func (d *Doctor) checkStuckPeers(peers []glaceonv1alpha1.FlyPeer) Result {
	now := d.opts.Now()
	var stuck []string
	for _, p := range peers {
		since := p.CreationTimestamp.Time
		switch {
		case p.Status.Phase == glaceonv1alpha1.FlyPeerReleasing || p.DeletionTimestamp != nil:
			if p.DeletionTimestamp != nil {
				since = p.DeletionTimestamp.Time
			}
		case p.Status.Phase == "" || p.Status.Phase == glaceonv1alpha1.FlyPeerProvisioning:
		default:
			continue
		}
		if age := now.Sub(since); age > d.opts.StuckAfter {
			phase := string(p.Status.Phase)
			if phase == "" {
				phase = string(glaceonv1alpha1.FlyPeerProvisioning)
			}
			line := fmt.Sprintf("%s %s for %s (pod %s/%s)", p.Name, phase, age.Round(time.Second), p.Spec.Pod.Namespace, p.Spec.Pod.Name)
			if c := meta.FindStatusCondition(p.Status.Conditions, glaceonv1alpha1.ConditionFlyPeerRemoved); c != nil && c.Message != "" {
				line += ": " + c.Message
			}
			stuck = append(stuck, line)
		}
	}
	if len(stuck) > 0 {
		sort.Strings(stuck)
		return failed(GroupOrgs, CheckFlyPeersStuck, fmt.Sprintf("%d FlyPeer(s) stuck longer than %s", len(stuck), d.opts.StuckAfter),
			strings.Join(stuck, "; "),
			"Provisioning: the admission died or the pod was refused after it; the sweeper deletes it and its Fly peer after --sweep-grace. Releasing: removing the Fly peer fails (its Removed condition says why; `kubectl get flypeer NAME -o yaml`)")
	}
	return ok(GroupOrgs, CheckFlyPeersStuck, "no FlyPeer stuck in Provisioning or Releasing (%d FlyPeers)", len(peers))
}
