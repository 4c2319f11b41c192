package certs

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the Secret's data. ca.crt is the CA bundle published as the
// webhooks' caBundle: the signing CA first, then the CAs it replaced that
// are still inside their overlap window.
const (
	CACertKey  = "ca.crt"
	CAKeyKey   = "ca.key"
	TLSCertKey = corev1.TLSCertKey
	TLSKeyKey  = corev1.TLSPrivateKeyKey
)

// maxRetainedCAs bounds how many replaced CAs stay in the bundle.
const maxRetainedCAs = 2

// policy decides, from a Secret's data and the time, whether the CA or the
// serving certificate must be (re)issued. It does no I/O, so every decision
// is table-tested with a fixed time.
type policy struct {
	caName          string
	caValidity      time.Duration
	servingValidity time.Duration
	caOverlap       time.Duration
	dnsNames        []string
	ips             []net.IP
}

// material is what a replica serves and publishes once a Secret is valid.
type material struct {
	// bundle is ca.crt, the value every webhook's caBundle must hold.
	bundle          []byte
	cert            *tls.Certificate
	caNotAfter      time.Time
	servingNotAfter time.Time
}

// decision is the outcome of policy.evaluate.
type decision struct {
	// data holds the four keys the Secret must carry.
	data map[string][]byte
	// changed is set when data differs from the input: the Secret must be
	// written.
	changed    bool
	newCA      bool
	newServing bool
	// reasons says why, in words fit for a log line (never key material).
	reasons []string
	state   *material
	// next is the latest time at which evaluate must run again: a renewal,
	// a CA rotation, or a replaced CA leaving the bundle.
	next time.Time
}

// evaluate validates data at now and returns the Secret data to store,
// issuing a new CA and/or serving certificate when the stored ones are
// missing, unparseable, mismatched, expiring or do not cover the names.
func (p *policy) evaluate(data map[string][]byte, now time.Time) (*decision, error) {
	return p.evaluateTrusting(data, now, nil)
}

// evaluateTrusting is evaluate where trusted are the CAs the webhook
// configurations trust now. When a new CA replaces one the Secret no
// longer holds (the Secret was deleted or its CA is unusable), trusted CAs
// stay in the bundle for the overlap as a replaced one would, so that
// replicas still serving a certificate from them stay trusted.
func (p *policy) evaluateTrusting(data map[string][]byte, now time.Time, trusted []*x509.Certificate) (*decision, error) {
	d := &decision{}
	oldBundle, bundleErr := parseCertsPEM(data[CACertKey])

	signing, caReason := p.signingCA(oldBundle, bundleErr, data[CAKeyKey], now)
	var caKeyPEM []byte
	if caReason != "" {
		ca, err := newCA(now, p.caValidity, p.caName)
		if err != nil {
			return nil, err
		}
		d.newCA = true
		d.reasons = append(d.reasons, caReason)
		signing, caKeyPEM = ca, ca.keyPEM
	} else {
		caKeyPEM = data[CAKeyKey]
	}

	// The bundle keeps the CAs this one replaced for caOverlap after it was
	// issued, so that a replica still serving a certificate from the old CA
	// stays trusted until it picks up the new Secret.
	overlapEnd := signing.cert.NotBefore.Add(backdate + p.caOverlap)
	bundle := []*x509.Certificate{signing.cert}
	d.next = p.caRotateAt(signing.cert)
	replaced := oldBundle
	if d.newCA {
		replaced = append(slices.Clone(oldBundle), trusted...)
	}
	for _, c := range replaced {
		if len(bundle) > maxRetainedCAs || !c.IsCA || slices.ContainsFunc(bundle, c.Equal) ||
			!now.Before(c.NotAfter) || !now.Before(overlapEnd) {
			continue
		}
		bundle = append(bundle, c)
		d.next = earliest(d.next, c.NotAfter, overlapEnd)
	}
	bundlePEM := encodeCerts(bundle)

	leaf, leafKey, leafPEM, leafKeyPEM, servingReason := p.serving(data, signing.cert, d.newCA, now)
	if servingReason != "" {
		kp, err := newServing(signing, now, p.servingValidity, p.dnsNames, p.ips)
		if err != nil {
			return nil, err
		}
		d.newServing = true
		d.reasons = append(d.reasons, servingReason)
		leaf, leafKey, leafPEM, leafKeyPEM = kp.cert, kp.key, kp.certPEM, kp.keyPEM
	}
	d.next = earliest(d.next, renewAt(leaf))

	d.data = map[string][]byte{
		CACertKey:  bundlePEM,
		CAKeyKey:   caKeyPEM,
		TLSCertKey: leafPEM,
		TLSKeyKey:  leafKeyPEM,
	}
	for k, v := range d.data {
		if !bytes.Equal(data[k], v) {
			d.changed = true
		}
	}
	if d.changed && !d.newCA && !d.newServing {
		d.reasons = append(d.reasons, "CA bundle out of date")
	}
	d.state = &material{
		bundle:          bundlePEM,
		cert:            &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey, Leaf: leaf},
		caNotAfter:      signing.cert.NotAfter,
		servingNotAfter: leaf.NotAfter,
	}
	return d, nil
}

// signingCA finds the CA that ca.key belongs to. A non-empty reason means a
// new CA is needed, and says why.
func (p *policy) signingCA(bundle []*x509.Certificate, bundleErr error, keyPEM []byte, now time.Time) (*keyPair, string) {
	if len(keyPEM) == 0 && len(bundle) == 0 {
		return nil, "no CA yet"
	}
	if bundleErr != nil {
		return nil, fmt.Sprintf("CA certificate unusable: %v", bundleErr)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Sprintf("CA key unusable: %v", err)
	}
	i := slices.IndexFunc(bundle, func(c *x509.Certificate) bool { return keyMatches(c, key) })
	if i < 0 {
		return nil, "CA key matches no certificate in the CA bundle"
	}
	ca := bundle[i]
	switch {
	case !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, "CA certificate may not sign certificates"
	case now.Before(ca.NotBefore) || !now.Before(ca.NotAfter):
		return nil, "CA certificate expired or not yet valid"
	case !now.Before(p.caRotateAt(ca)):
		return nil, "CA certificate near expiry"
	}
	return &keyPair{cert: ca, key: key}, ""
}

// serving returns the stored serving certificate, or a reason to issue a
// new one.
func (p *policy) serving(data map[string][]byte, ca *x509.Certificate, newCA bool, now time.Time) (
	leaf *x509.Certificate, key crypto.Signer, certPEM, keyPEM []byte, reason string,
) {
	if newCA {
		return nil, nil, nil, nil, "new CA"
	}
	chain, err := parseCertsPEM(data[TLSCertKey])
	if err != nil {
		return nil, nil, nil, nil, fmt.Sprintf("serving certificate unusable: %v", err)
	}
	leaf = chain[0]
	key, err = parseKeyPEM(data[TLSKeyKey])
	if err != nil {
		return nil, nil, nil, nil, fmt.Sprintf("serving key unusable: %v", err)
	}
	switch {
	case !keyMatches(leaf, key):
		return nil, nil, nil, nil, "serving key does not match the serving certificate"
	case leaf.CheckSignatureFrom(ca) != nil:
		return nil, nil, nil, nil, "serving certificate not signed by the current CA"
	case !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
		return nil, nil, nil, nil, "serving certificate not for server authentication"
	case now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter):
		return nil, nil, nil, nil, "serving certificate expired or not yet valid"
	case !now.Before(renewAt(leaf)):
		return nil, nil, nil, nil, "serving certificate near expiry"
	}
	if missing := p.missingNames(leaf); len(missing) > 0 {
		return nil, nil, nil, nil, "serving certificate lacks " + strings.Join(missing, ", ")
	}
	return leaf, key, data[TLSCertKey], data[TLSKeyKey], ""
}

// missingNames lists the configured names leaf does not cover. Extra names
// are fine: during a rolling upgrade that adds a name, the old replicas then
// accept the new replicas' certificate instead of reissuing it.
func (p *policy) missingNames(leaf *x509.Certificate) []string {
	var missing []string
	for _, n := range p.dnsNames {
		if !slices.ContainsFunc(leaf.DNSNames, func(s string) bool { return strings.EqualFold(s, n) }) {
			missing = append(missing, n)
		}
	}
	for _, ip := range p.ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			missing = append(missing, ip.String())
		}
	}
	return missing
}

// caRotateAt is when a CA is replaced: once a third of its lifetime is
// left, and early enough that it outlives any serving certificate it signs.
func (p *policy) caRotateAt(ca *x509.Certificate) time.Time {
	lead := max(ca.NotAfter.Sub(ca.NotBefore)/3, p.servingValidity)
	return ca.NotAfter.Add(-lead)
}

// renewAt is when a serving certificate is replaced: once a third of its
// lifetime is left.
func renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)
}

func earliest(t time.Time, more ...time.Time) time.Time {
	for _, m := range more {
		if m.Before(t) {
			t = m
		}
	}
	return t
}
