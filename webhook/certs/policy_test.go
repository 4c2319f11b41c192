package certs

import (
	"crypto"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func testPolicy() *policy {
	return &policy{
		caName:          "test-ca",
		caValidity:      3000 * time.Hour,
		servingValidity: 900 * time.Hour,
		caOverlap:       24 * time.Hour,
		dnsNames:        []string{"svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"},
		ips:             []net.IP{net.ParseIP("127.0.0.1")},
	}
}

// issue returns the Secret data a policy writes from scratch at t.
func issue(t *testing.T, p *policy, at time.Time) map[string][]byte {
	t.Helper()
	d, err := p.evaluate(nil, at)
	if err != nil {
		t.Fatal(err)
	}
	return d.data
}

// with returns a copy of data with the given keys replaced.
func with(data map[string][]byte, kv ...any) map[string][]byte {
	out := make(map[string][]byte, len(data))
	for k, v := range data {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1].([]byte)
	}
	return out
}

// verify checks that the decision's served certificate chains to its
// bundle for every configured name at now.
func verify(t *testing.T, p *policy, d *decision, now time.Time) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(d.state.bundle) {
		t.Fatal("bundle holds no certificate")
	}
	if string(d.state.bundle) != string(d.data[CACertKey]) {
		t.Error("served bundle differs from ca.crt")
	}
	names := append([]string(nil), p.dnsNames...)
	for _, ip := range p.ips {
		names = append(names, ip.String())
	}
	for _, n := range names {
		_, err := d.state.cert.Leaf.Verify(x509.VerifyOptions{
			DNSName: n, Roots: roots, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", n, err)
		}
	}
	if !keyMatches(d.state.cert.Leaf, d.state.cert.PrivateKey.(crypto.Signer)) {
		t.Error("served key does not match served certificate")
	}
}

func TestEvaluate(t *testing.T) {
	p := testPolicy()
	fresh := issue(t, p, t0)
	other := issue(t, p, t0) // a second, unrelated CA and serving pair
	servingLife := p.servingValidity + backdate
	caLife := p.caValidity + backdate

	tests := map[string]struct {
		policy     *policy
		data       map[string][]byte
		now        time.Time
		newCA      bool
		newServing bool
		changed    bool
		reason     string // substring of one reason
		bundleLen  int
	}{
		"empty secret": {
			data: nil, now: t0,
			newCA: true, newServing: true, changed: true, reason: "no CA yet", bundleLen: 1,
		},
		"fresh": {
			data: fresh, now: t0.Add(time.Hour), bundleLen: 1,
		},
		"serving just before renewal": {
			data: fresh, now: t0.Add(-backdate + servingLife*2/3 - time.Minute), bundleLen: 1,
		},
		"serving near expiry": {
			data: fresh, now: t0.Add(-backdate + servingLife*2/3 + time.Minute),
			newServing: true, changed: true, reason: "serving certificate near expiry", bundleLen: 1,
		},
		"serving not yet valid (clock went back)": {
			data: fresh, now: t0.Add(-2 * backdate),
			// The old CA stays for replicas whose clock is right.
			newCA: true, newServing: true, changed: true, reason: "CA certificate expired or not yet valid", bundleLen: 2,
		},
		"names added": {
			policy: func() *policy { q := testPolicy(); q.dnsNames = append(q.dnsNames, "new.example"); return q }(),
			data:   fresh, now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "lacks new.example", bundleLen: 1,
		},
		"ip added": {
			policy: func() *policy { q := testPolicy(); q.ips = append(q.ips, net.ParseIP("::1")); return q }(),
			data:   fresh, now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "lacks ::1", bundleLen: 1,
		},
		"names removed: a superset is fine": {
			policy: func() *policy { q := testPolicy(); q.dnsNames = q.dnsNames[:1]; q.ips = nil; return q }(),
			data:   fresh, now: t0.Add(time.Hour), bundleLen: 1,
		},
		"garbage serving certificate": {
			data: with(fresh, TLSCertKey, []byte("not a certificate")), now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "serving certificate unusable", bundleLen: 1,
		},
		"serving certificate followed by garbage": {
			data: with(fresh, TLSCertKey, append(append([]byte{}, fresh[TLSCertKey]...), "junk"...)), now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "serving certificate unusable", bundleLen: 1,
		},
		"missing serving key": {
			data: with(fresh, TLSKeyKey, []byte{}), now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "serving key unusable", bundleLen: 1,
		},
		"serving key mismatch": {
			data: with(fresh, TLSKeyKey, other[TLSKeyKey]), now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "serving key does not match", bundleLen: 1,
		},
		"serving certificate from another CA": {
			data: with(fresh, TLSCertKey, other[TLSCertKey], TLSKeyKey, other[TLSKeyKey]), now: t0.Add(time.Hour),
			newServing: true, changed: true, reason: "not signed by the current CA", bundleLen: 1,
		},
		"garbage CA certificate": {
			data: with(fresh, CACertKey, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), now: t0.Add(time.Hour),
			newCA: true, newServing: true, changed: true, reason: "CA certificate unusable", bundleLen: 1,
		},
		"CA key is a serving key": {
			data: with(fresh, CAKeyKey, fresh[TLSKeyKey]), now: t0.Add(time.Hour),
			// The old CA is still valid: it stays in the bundle for the overlap.
			newCA: true, newServing: true, changed: true, reason: "matches no certificate", bundleLen: 2,
		},
		"CA key of another CA": {
			data: with(fresh, CAKeyKey, other[CAKeyKey]), now: t0.Add(time.Hour),
			newCA: true, newServing: true, changed: true, reason: "matches no certificate", bundleLen: 2,
		},
		"CA near expiry: rotate with overlap": {
			data: fresh, now: t0.Add(-backdate + caLife*2/3 + time.Minute),
			newCA: true, newServing: true, changed: true, reason: "CA certificate near expiry", bundleLen: 2,
		},
		"CA must outlive a full serving certificate": {
			policy: func() *policy { q := testPolicy(); q.servingValidity = 1500 * time.Hour; return q }(),
			data:   fresh, now: t0.Add(-backdate + caLife - 1500*time.Hour + time.Minute),
			newCA: true, newServing: true, changed: true, reason: "CA certificate near expiry", bundleLen: 2,
		},
		"CA expired: nothing to keep": {
			data: fresh, now: t0.Add(caLife + time.Hour),
			newCA: true, newServing: true, changed: true, reason: "CA certificate expired", bundleLen: 1,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := tc.policy
			if p == nil {
				p = testPolicy()
			}
			d, err := p.evaluate(tc.data, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if d.newCA != tc.newCA || d.newServing != tc.newServing || d.changed != tc.changed {
				t.Errorf("newCA, newServing, changed = %v, %v, %v; want %v, %v, %v (reasons %q)",
					d.newCA, d.newServing, d.changed, tc.newCA, tc.newServing, tc.changed, d.reasons)
			}
			if tc.reason != "" && !strings.Contains(strings.Join(d.reasons, "; "), tc.reason) {
				t.Errorf("reasons %q do not mention %q", d.reasons, tc.reason)
			}
			if !tc.changed && len(d.reasons) > 0 {
				t.Errorf("unchanged but reasons %q", d.reasons)
			}
			bundle, err := parseCertsPEM(d.data[CACertKey])
			if err != nil {
				t.Fatal(err)
			}
			if len(bundle) != tc.bundleLen {
				t.Errorf("bundle holds %d CAs, want %d", len(bundle), tc.bundleLen)
			}
			if !tc.newCA && tc.data != nil && string(d.data[CAKeyKey]) != string(tc.data[CAKeyKey]) {
				t.Error("CA key changed without a new CA")
			}
			if !tc.newServing && tc.data != nil && string(d.data[TLSCertKey]) != string(tc.data[TLSCertKey]) {
				t.Error("serving certificate changed without a renewal")
			}
			if !d.next.After(tc.now) {
				t.Errorf("next check %v is not after now %v", d.next, tc.now)
			}
			verify(t, p, d, tc.now)

			// Whatever was written is stable: evaluating it again changes nothing.
			again, err := p.evaluate(d.data, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if again.changed {
				t.Errorf("second evaluation changed the Secret again: %q", again.reasons)
			}
		})
	}
}

func TestEvaluateCAOverlap(t *testing.T) {
	p := testPolicy()
	fresh := issue(t, p, t0)
	oldCA, _ := parseCertsPEM(fresh[CACertKey])

	// Rotate the CA: both the new and the old CA are published, new first.
	rotateAt := p.caRotateAt(oldCA[0])
	d, err := p.evaluate(fresh, rotateAt)
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := parseCertsPEM(d.data[CACertKey])
	if !d.newCA || len(bundle) != 2 || !bundle[1].Equal(oldCA[0]) || !keyMatches(bundle[0], mustKey(t, d.data[CAKeyKey])) {
		t.Fatalf("rotation: newCA=%v, bundle of %d, want [new, old] with ca.key for the new one", d.newCA, len(bundle))
	}
	// The old CA leaves the bundle when the overlap ends, and no sooner.
	overlapEnd := bundle[0].NotBefore.Add(backdate + p.caOverlap)
	if !d.next.Equal(overlapEnd) {
		t.Errorf("next check = %v, want the end of the overlap %v", d.next, overlapEnd)
	}
	if d2, _ := p.evaluate(d.data, overlapEnd.Add(-time.Second)); d2.changed {
		t.Errorf("bundle changed before the overlap ended: %q", d2.reasons)
	}
	d3, err := p.evaluate(d.data, overlapEnd)
	if err != nil {
		t.Fatal(err)
	}
	pruned, _ := parseCertsPEM(d3.data[CACertKey])
	if !d3.changed || d3.newCA || d3.newServing || len(pruned) != 1 || !pruned[0].Equal(bundle[0]) {
		t.Errorf("after the overlap: changed=%v newCA=%v newServing=%v bundle of %d; want only the new CA",
			d3.changed, d3.newCA, d3.newServing, len(pruned))
	}
	verify(t, p, d3, overlapEnd)
}

func TestEvaluateBoundsRetainedCAs(t *testing.T) {
	p := testPolicy()
	p.caOverlap = 1000 * time.Hour
	data := issue(t, p, t0)
	// Replace the CA key four times in a row: at most maxRetainedCAs old CAs stay.
	for i := range 4 {
		other := issue(t, p, t0)
		d, err := p.evaluate(with(data, CAKeyKey, other[TLSKeyKey]), t0.Add(time.Duration(i+1)*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		data = d.data
	}
	bundle, _ := parseCertsPEM(data[CACertKey])
	if len(bundle) != 1+maxRetainedCAs {
		t.Errorf("bundle holds %d CAs, want %d", len(bundle), 1+maxRetainedCAs)
	}
}

func TestOptions(t *testing.T) {
	valid := func() Options {
		return Options{SecretNamespace: "ns", SecretName: "s", ServiceName: "svc", WebhookConfigurations: []string{"w"}}
	}
	if _, err := New(valid()); err != nil {
		t.Fatalf("valid options rejected: %v", err)
	}
	o := valid()
	o.setDefaults()
	if got := strings.Join(o.DNSNames(), ","); got != "svc,svc.ns,svc.ns.svc,svc.ns.svc.cluster.local" {
		t.Errorf("DNSNames() = %s", got)
	}
	bad := map[string]func(*Options){
		"no secret":           func(o *Options) { o.SecretName = "" },
		"no webhook config":   func(o *Options) { o.WebhookConfigurations = nil },
		"no names":            func(o *Options) { o.ServiceName = "" },
		"bad name":            func(o *Options) { o.ExtraDNSNames = []string{"Not_A_Name"} },
		"serving outlives CA": func(o *Options) { o.CAValidity = time.Hour; o.ServingValidity = time.Hour },
		"negative overlap":    func(o *Options) { o.CAOverlap = -time.Second },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			o := valid()
			mutate(&o)
			if _, err := New(o); err == nil {
				t.Error("invalid options accepted")
			}
		})
	}
}

func TestParseKeyFormats(t *testing.T) {
	for name, in := range map[string]string{
		"empty":         "",
		"certificate":   "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"truncated key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"trailing data": string(issue(t, testPolicy(), t0)[TLSKeyKey]) + "x",
	} {
		if _, err := parseKeyPEM([]byte(in)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func mustKey(t *testing.T, pemBytes []byte) crypto.Signer {
	t.Helper()
	k, err := parseKeyPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
