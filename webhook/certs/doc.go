// Package certs gives the admission webhook a serving certificate without
// cert-manager: a CA and a serving certificate kept in one Secret, served
// from memory through the webhook server's tls.Config.GetCertificate, and a
// caBundle kept patched into the MutatingWebhookConfiguration.
//
// # Behaviour
//
// A reconciler runs on every replica, at start, whenever the Secret or a
// named webhook configuration changes, and at least every ResyncPeriod:
//
//   - It reads the Secret (ca.crt, ca.key, tls.crt, tls.key) and checks that
//     every part parses, that each key matches its certificate, that the
//     serving certificate was signed by the CA, covers the Service's DNS
//     names and extra SANs, and that neither certificate is in the last third
//     of its lifetime (the CA also rotates before it has ServingValidity
//     left, so it outlives every certificate it signs).
//   - Whatever fails is reissued, and the Secret is created or updated with
//     optimistic concurrency. A replica that loses the race (AlreadyExists or
//     Conflict) re-reads the winner's Secret and adopts it, so two replicas
//     starting together end with one CA.
//   - A rotated CA stays in ca.crt (and so in the caBundle) for CAOverlap,
//     so a replica still serving a certificate from the old CA is trusted
//     until it picks up the new Secret from its watch.
//   - A new CA is published before it is used: the caBundle is patched
//     first, and a certificate from a CA the previous caBundle lacked is
//     served only 2 seconds later, so that every API server has seen it.
//     When the Secret is deleted (or its CA is unusable), the CAs the
//     webhook configurations trust stay in the new bundle for CAOverlap, as
//     a rotated CA does: replicas still serving the old certificate stay
//     trusted.
//   - The certificate is swapped in memory: no restart, no mounted files, no
//     kubelet Secret propagation delay.
//   - Every webhook's clientConfig.caBundle in the named configurations is
//     set to ca.crt with an idempotent JSON patch; re-applying the
//     configuration with an empty caBundle is undone within seconds.
//
// Ready (and ReadyzCheck, for the manager's readyz endpoint) turns true once
// a certificate is loaded and every caBundle was patched.
//
// # Wiring
//
//	certMgr, err := certs.New(certs.Options{
//		SecretNamespace: ns, SecretName: "glaceon-webhook-tls",
//		ServiceName: "glaceon-webhook",
//		WebhookConfigurations: []string{"glaceon"},
//	})
//	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
//		WebhookServer: webhook.NewServer(webhook.Options{
//			Port: 9443, TLSOpts: []func(*tls.Config){certMgr.TLSOpts},
//		}),
//		HealthProbeBindAddress: ":8081",
//	})
//	err = certMgr.SetupWithManager(mgr)
//	err = mgr.AddReadyzCheck("webhook-certs", certMgr.ReadyzCheck)
//
// # RBAC
//
// The Manager watches through its own cache, restricted by field selector
// to the Secret's name in its namespace and (when exactly one is
// configured) to the webhook configuration's name, so it needs only:
//
//   - Secrets in the Secret's namespace (a Role): get, list, watch, update
//     restricted with resourceNames to the Secret; create without
//     resourceNames (Kubernetes cannot restrict create by name). Pre-create
//     the Secret empty, with type Opaque, in the deployment manifests to
//     drop create (a deleted Secret is then not recreated: the reconciler
//     reports Forbidden and retries until the Secret is restored).
//   - mutatingwebhookconfigurations (a ClusterRole): get, list, watch,
//     patch restricted with resourceNames to the configuration. With more
//     than one configuration name, list and watch cannot be restricted.
//
// deploy/rbac, the one truth of the manager's RBAC, grants these for the
// defaults of cmd/glaceon and deploy/ (namespace glaceon-system, Secret
// glaceon-webhook-tls, MutatingWebhookConfiguration glaceon); the manager's
// cluster-wide Secret rules, which the webhook needs for peer Secrets,
// cover the Secret.
package certs
