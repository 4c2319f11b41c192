// Package machineproxy is the MachineProxy controller: for each
// MachineProxy (glaceon.fly/v1alpha1) it keeps a Deployment of
// glaceon-sidecar in shared mode, a Service named after the MachineProxy
// and, with more than one replica, a PodDisruptionBudget. A MachineProxy
// twi-ollama in namespace flycast thus makes http://twi-ollama.flycast work
// from every pod of the cluster, through the cluster DNS search path.
//
// # Who does what: the "peer-only" contract with the admission webhook
//
// Each proxy replica needs a Fly WireGuard peer of its own (one key cannot
// serve two live endpoints), made when the pod is created; that is exactly
// what glaceon's pod webhook does for every annotated pod, including the
// bookkeeping that removes the peer with the pod (webhook/peers). So the
// proxy pods go through the webhook like any other pod, and this controller
// never talks to Fly.
//
// What the webhook must not do for them is inject its sidecar: the proxy
// container IS glaceon-sidecar, built by the same builder as the injected
// one (inject.SidecarContainer) with the proxy's listeners and ports.
// The alternative, letting the webhook inject a sidecar that listens on
// the pod IP, was rejected because
//
//   - a pod needs a container of its own, so the proxy would carry a
//     placeholder container that does nothing;
//   - injected listeners use the target's own port on a loopback address per
//     host, so two targets on one port (a.flycast:80, b.flycast:80) could
//     not share 0.0.0.0, and the Service port would be tied to the
//     target's port; here each target gets its own container port
//     (8080, 8081, …, no sysctl needed) mapped to any Service port;
//   - host aliases, GLACEON_TARGET_* variables and the native-sidecar
//     startup gate mean nothing for a pod that is only a proxy, while the
//     proxy needs things the injected sidecar does not have (its own
//     resources, node selector, tolerations, spread constraints).
//
// The proxy pod template therefore carries
//
//	glaceon.fly/target: <canonical targets>    (opts in; the webhook validates it)
//	glaceon.fly/org, glaceon.fly/region        (the peer's org and gateway region)
//	glaceon.fly/inject-mode: peer-only         (InjectModePeerOnly)
//
// and a Secret volume named glaceon-peer (inject.PeerVolumeName) whose
// secretName is the placeholder glaceon-peer-placeholder. In peer-only mode
// the webhook provisions the peer and its Secret as usual, then only sets
// that volume's secretName to the peer Secret and writes its status
// annotations (glaceon.fly/peer, glaceon.fly/injected) and label; it adds no
// container, volume, env, host alias or sysctl. The peer lifecycle then
// works unchanged: the pod names its peer and mounts its Secret.
//
// The tests run the whole manager (webhook/manager/managertest), so the
// proxy pods go through the real webhook in peer-only mode.
//
// # Reconcile
//
// The controller follows the controller-runtime recipe: Get, NotFound →
// done, deleting → done (children carry owner references, so the garbage
// collector removes them, and the peer lifecycle removes each pod's Fly
// peer; no finalizer, so deleting a MachineProxy never hangs on glaceon),
// else provision: desired objects come from the pure builders in
// machineproxy_specs.go and are written with server-side apply, and a
// deferred status update derives the Ready, Progressing and Degraded
// conditions from the Deployment. An invalid spec is a False condition and
// a Warning Event, never a requeue loop.
package machineproxy
