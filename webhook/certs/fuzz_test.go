package certs

import (
	"testing"
	"time"
)

// FuzzEvaluate feeds arbitrary Secret content to the policy: whatever is
// stored, evaluate must not panic, must produce a Secret that verifies and
// must be stable (a second evaluation changes nothing).
func FuzzEvaluate(f *testing.F) {
	p := testPolicy()
	fresh := issue(&testing.T{}, p, t0)
	f.Add(fresh[CACertKey], fresh[CAKeyKey], fresh[TLSCertKey], fresh[TLSKeyKey])
	f.Add(fresh[CACertKey], fresh[TLSKeyKey], fresh[TLSCertKey], fresh[CAKeyKey])
	f.Add([]byte{}, []byte{}, fresh[TLSCertKey], fresh[TLSKeyKey])
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"), []byte("x"), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, caCert, caKey, tlsCert, tlsKey []byte) {
		now := t0.Add(time.Hour)
		in := map[string][]byte{CACertKey: caCert, CAKeyKey: caKey, TLSCertKey: tlsCert, TLSKeyKey: tlsKey}
		d, err := p.evaluate(in, now)
		if err != nil {
			t.Fatal(err)
		}
		verify(t, p, d, now)
		again, err := p.evaluate(d.data, now)
		if err != nil {
			t.Fatal(err)
		}
		if again.changed {
			t.Errorf("not stable: %q", again.reasons)
		}
	})
}
