package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/webhook/admission"
	apiv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// Pod runs the pod group for namespace/name. When no such pod exists, name
// is taken as its workload's (a Deployment's pods are refused before they
// exist): the denial Events on its ReplicaSets say why.
func (d *Doctor) Pod(ctx context.Context, namespace, name string) []Result {
	var pod corev1.Pod
	err := d.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod)
	if apierrors.IsNotFound(err) {
		return []Result{d.checkDenials(ctx, namespace, []string{name}, true)}
	}
	if err != nil {
		return []Result{failed(GroupPod, CheckPodInjected, "cannot read the pod", err.Error(), "check the name and that you may get pods in "+namespace)}
	}
	var owners []string
	for _, ref := range pod.OwnerReferences {
		owners = append(owners, ref.Name)
	}
	out := []Result{d.checkInjected(ctx, &pod)}
	if _, injected := pod.Annotations[inject.AnnotationInjected]; injected {
		out = append(out, d.checkPodFlyPeer(ctx, &pod))
		out = append(out, d.checkSidecar(ctx, &pod)...)
	}
	if len(owners) > 0 {
		out = append(out, d.checkDenials(ctx, namespace, owners, false))
	}
	return d.skip(out)
}

func (d *Doctor) checkInjected(ctx context.Context, pod *corev1.Pod) Result {
	id := pod.Namespace + "/" + pod.Name
	if v, injected := pod.Annotations[inject.AnnotationInjected]; injected {
		return ok(GroupPod, CheckPodInjected, "pod %s injected (%s=%s, targets %s)", id, inject.AnnotationInjected, v, pod.Annotations[inject.AnnotationTarget])
	}
	if !inject.WantsInjection(pod) {
		return failed(GroupPod, CheckPodInjected, fmt.Sprintf("pod %s is not injected", id), "it has no "+inject.AnnotationTarget+" annotation, so the webhook never sees it",
			"annotate the pod template (not the Deployment) with "+inject.AnnotationTarget+`: "app.flycast:80"`)
	}
	var mwc admissionv1.MutatingWebhookConfiguration
	if err := d.c.Get(ctx, client.ObjectKey{Name: d.opts.WebhookConfig}, &mwc); err == nil {
		var ns corev1.Namespace
		if err := d.c.Get(ctx, client.ObjectKey{Name: pod.Namespace}, &ns); err == nil {
			for _, wh := range mwc.Webhooks {
				if wh.Name != webhookName || wh.NamespaceSelector == nil {
					continue
				}
				sel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
				if err == nil && !sel.Matches(labels.Set(ns.Labels)) {
					return failed(GroupPod, CheckPodInjected, fmt.Sprintf("pod %s is not injected", id),
						fmt.Sprintf("namespace %s is excluded by the webhook's namespaceSelector (%s)", pod.Namespace, sel),
						"run the pod in another namespace; glaceon's own namespace and kube-system are never injected")
				}
			}
		}
	}
	return failed(GroupPod, CheckPodInjected, fmt.Sprintf("pod %s is annotated but not injected", id),
		"the webhook was not called when it was created (it predates glaceon's install, or the configuration was missing then)",
		"recreate the pod (`kubectl rollout restart` its workload); `glaceon doctor` checks the install")
}

func (d *Doctor) checkPodFlyPeer(ctx context.Context, pod *corev1.Pod) Result {
	var peers apiv1alpha1.FlyPeerList
	if err := d.c.List(ctx, &peers); err != nil {
		return failed(GroupPod, CheckPodFlyPeer, "cannot list FlyPeers", err.Error(), "check you may list flypeers")
	}
	for _, p := range peers.Items {
		// The webhook names the FlyPeer in the pod's annotation at once;
		// spec.pod's name and UID follow only when the peer controller
		// binds it, moments after the pod is stored.
		named := p.Name == pod.Annotations[inject.AnnotationPeer]
		bound := p.Spec.Pod.Namespace == pod.Namespace && (p.Spec.Pod.UID == pod.UID || p.Spec.Pod.Name == pod.Name)
		if !named && !bound {
			continue
		}
		switch p.Status.Phase {
		case apiv1alpha1.FlyPeerBound, apiv1alpha1.FlyPeerReady:
			where := "org " + p.Spec.Org
			if p.Spec.Region != "" {
				where += ", region " + p.Spec.Region
			}
			return ok(GroupPod, CheckPodFlyPeer, "FlyPeer %s %s (%s, address %s)", p.Name, p.Status.Phase, where, p.Status.PeerIP)
		case apiv1alpha1.FlyPeerAvailable:
			// Claimed from the warm pool: the tenant Secret holds its key,
			// so the sidecar works; only the binding to the pod is pending.
			if p.Spec.Pod.Namespace == pod.Namespace {
				return warned(GroupPod, CheckPodFlyPeer, fmt.Sprintf("FlyPeer %s claimed from the pool, not bound to the pod yet", p.Name),
					"the peer controller binds a claimed peer when it sees the pod; it has not yet",
					"check the manager is running (`glaceon doctor`); an unbound claim is swept after --sweep-grace")
			}
		}
		return failed(GroupPod, CheckPodFlyPeer, fmt.Sprintf("FlyPeer %s is %s", p.Name, p.Status.Phase),
			"the pod's Fly peer is not in use", fmt.Sprintf("`kubectl get flypeer %s -o yaml` (its conditions say why)", p.Name))
	}
	return failed(GroupPod, CheckPodFlyPeer, "the injected pod has no FlyPeer",
		"its Fly peer was removed (the sweeper or a deleted FlyOrg); the sidecar cannot connect", "recreate the pod")
}

// checkDenials reports the webhook's denial Events on owners, or on the
// ReplicaSets of a Deployment named by owners when prefix.
func (d *Doctor) checkDenials(ctx context.Context, namespace string, owners []string, missingPod bool) Result {
	var events eventsv1.EventList
	if err := d.c.List(ctx, &events, client.InNamespace(namespace)); err != nil {
		return failed(GroupPod, CheckPodDenials, "cannot list Events", err.Error(), "check you may list events in "+namespace)
	}
	var denials []eventsv1.Event
	for _, ev := range events.Items {
		if ev.Reason != admission.ReasonDenied {
			continue
		}
		for _, o := range owners {
			if ev.Regarding.Name == o || (missingPod && strings.HasPrefix(ev.Regarding.Name, o+"-")) {
				denials = append(denials, ev)
			}
		}
	}
	if len(denials) > 0 {
		sort.Slice(denials, func(i, j int) bool { return lastSeen(denials[i]).Before(lastSeen(denials[j])) })
		last := denials[len(denials)-1]
		return failed(GroupPod, CheckPodDenials, fmt.Sprintf("the webhook denied pods of %s %s/%s", last.Regarding.Kind, namespace, last.Regarding.Name),
			last.Note, "the message names the field and the fix; the ReplicaSet retries by itself once it is fixed")
	}
	if missingPod {
		return failed(GroupPod, CheckPodDenials, fmt.Sprintf("no pod %s/%s and no denial recorded for a workload of that name", namespace, owners[0]),
			"the pod does not exist", "check the name and namespace (`kubectl -n "+namespace+" get pods`)")
	}
	return ok(GroupPod, CheckPodDenials, "no denial recorded on %s", strings.Join(owners, ", "))
}

func lastSeen(ev eventsv1.Event) time.Time {
	if ev.Series != nil {
		return ev.Series.LastObservedTime.Time
	}
	return ev.EventTime.Time
}
