package flyorg

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// FlyAPI is the part of the Fly API glaceon's manager uses; *flyapi.Client
// implements it.
type FlyAPI interface {
	Organization(ctx context.Context, slug string) (*flyapi.Organization, error)
	AddPeer(ctx context.Context, in flyapi.AddPeerInput) (*flyapi.CreatedPeer, error)
	ListPeers(ctx context.Context, orgSlug string) ([]flyapi.Peer, error)
	RemovePeer(ctx context.Context, org flyapi.Organization, name string) error
}

var _ FlyAPI = (*flyapi.Client)(nil)

// TokenError says why a FlyOrg's token cannot be used; Reason is the Ready
// condition's reason.
type TokenError struct {
	Reason  string
	Message string
	Err     error
}

func (e *TokenError) Error() string { return e.Message }
func (e *TokenError) Unwrap() error { return e.Err }

// Registry holds one Fly API client per FlyOrg (its metrics labelled with
// the FlyOrg) and follows the token Secrets: a changed Secret (new
// resourceVersion) is read again, uncached, and its token handed to the
// client's TokenHolder, used from the next request on. Safe for
// concurrent use.
type Registry struct {
	namespace string
	// meta is a metadata-only cache of the Secrets in namespace: it tells
	// whether a Secret changed without holding any token.
	meta client.Reader
	// secrets reads a token Secret when it changed (uncached).
	secrets client.Reader
	fly     flyapi.Options

	mu      sync.Mutex
	clients map[string]*orgClient // by FlyOrg name
}

type orgClient struct {
	secret          types.NamespacedName
	key             string
	resourceVersion string
	tokens          *flyapi.TokenHolder
	fly             FlyAPI
}

// NewRegistry returns a Registry for token Secrets in namespace. meta is a
// (metadata-only) cached reader of those Secrets, secrets an uncached one;
// fly is the template of every client's options (its Token is ignored).
func NewRegistry(namespace string, meta, secrets client.Reader, fly flyapi.Options) *Registry {
	fly.Token, fly.TokenSource = "", ""
	return &Registry{namespace: namespace, meta: meta, secrets: secrets, fly: fly, clients: map[string]*orgClient{}}
}

// Namespace is where token Secrets live.
func (r *Registry) Namespace() string { return r.namespace }

// TokenSource names org's token Secret, for messages ("secret
// glaceon-system/fly-api-token, key token").
func (r *Registry) TokenSource(org *glaceonv1alpha1.FlyOrg) string {
	return fmt.Sprintf("secret %s/%s, key %s", r.namespace, org.Spec.TokenSecretRef.Name, tokenKey(org))
}

func tokenKey(org *glaceonv1alpha1.FlyOrg) string {
	if k := org.Spec.TokenSecretRef.Key; k != "" {
		return k
	}
	return "token"
}

// SecretVersion is the resourceVersion of org's token Secret as cached, or
// "" if it cannot be read (the check then says why).
func (r *Registry) SecretVersion(ctx context.Context, org *glaceonv1alpha1.FlyOrg) string {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.meta.Get(ctx, types.NamespacedName{Namespace: r.namespace, Name: org.Spec.TokenSecretRef.Name}, meta); err != nil {
		return ""
	}
	return meta.ResourceVersion
}

// Client returns the Fly client for org's current token. Errors are
// *TokenError.
func (r *Registry) Client(ctx context.Context, org *glaceonv1alpha1.FlyOrg) (FlyAPI, error) {
	key := types.NamespacedName{Namespace: r.namespace, Name: org.Spec.TokenSecretRef.Name}
	source := r.TokenSource(org)
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.meta.Get(ctx, key, meta); err != nil {
		return nil, r.secretError(org, source, err)
	}
	tk := tokenKey(org)
	r.mu.Lock()
	c, ok := r.clients[org.Name]
	r.mu.Unlock()
	if ok && c.secret == key && c.key == tk && c.resourceVersion == meta.ResourceVersion {
		return c.fly, nil
	}

	var secret corev1.Secret
	if err := r.secrets.Get(ctx, key, &secret); err != nil {
		return nil, r.secretError(org, source, err)
	}
	token, ok := secret.Data[tk]
	if !ok || len(token) == 0 {
		return nil, &TokenError{Reason: ReasonTokenSecretInvalid,
			Message: fmt.Sprintf("%s has no key %q (or it is empty): put the Fly token under that key, or fix spec.tokenSecretRef.key of FlyOrg %s", source, tk, org.Name)}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok = r.clients[org.Name]
	if !ok {
		opts := r.fly
		opts.Tokens, opts.Org = &flyapi.TokenHolder{}, org.Name
		fly, err := flyapi.New(opts)
		if err != nil {
			return nil, &TokenError{Reason: ReasonTokenSecretInvalid, Err: err, Message: fmt.Sprintf("build the Fly client of FlyOrg %s: %v", org.Name, err)}
		}
		c = &orgClient{tokens: opts.Tokens.(*flyapi.TokenHolder), fly: fly}
		r.clients[org.Name] = c
	}
	err := c.tokens.Set(string(token), source)
	clear(token)
	if err != nil {
		return nil, &TokenError{Reason: ReasonTokenSecretInvalid, Err: err,
			Message: fmt.Sprintf("the token in %s is not a Fly API token: %v; create one with `fly tokens create org`", source, err)}
	}
	c.secret, c.key, c.resourceVersion = key, tk, secret.ResourceVersion
	return c.fly, nil
}

func (r *Registry) secretError(org *glaceonv1alpha1.FlyOrg, source string, err error) error {
	if apierrors.IsNotFound(err) {
		// Drop a client built from a Secret that is gone: a deleted token
		// must stop working.
		r.mu.Lock()
		delete(r.clients, org.Name)
		r.mu.Unlock()
		return &TokenError{Reason: ReasonTokenSecretMissing, Err: err,
			Message: fmt.Sprintf("%s does not exist: create it (kubectl -n %s create secret generic %s --from-literal=%s=\"$(fly tokens create org)\") or fix spec.tokenSecretRef of FlyOrg %s",
				source, r.namespace, org.Spec.TokenSecretRef.Name, tokenKey(org), org.Name)}
	}
	return &TokenError{Reason: ReasonTokenSecretInvalid, Err: err,
		Message: fmt.Sprintf("read %s: %v", source, err)}
}
