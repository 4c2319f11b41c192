package sidecar

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

var (
	testQName    = dnsmessage.MustNewName("myapp.flycast.")
	testQuestion = dnsmessage.Question{Name: testQName, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}
	testAddr     = netip.MustParseAddr("fdaa:0:1:a7b::2")
	otherAddr    = netip.MustParseAddr("fdaa:0:1:a7b::66")
)

// dnsResponse builds an answer; edit adjusts it before packing.
func dnsResponse(t testing.TB, id uint16, edit func(*dnsmessage.Message)) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, Response: true, Authoritative: true},
		Questions: []dnsmessage.Question{testQuestion},
		Answers:   []dnsmessage.Resource{aaaa(testQName, testAddr)},
	}
	if edit != nil {
		edit(&m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func aaaa(name dnsmessage.Name, a netip.Addr) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 30},
		Body:   &dnsmessage.AAAAResource{AAAA: a.As16()},
	}
}

func TestParseResponseMatchesTheQuestion(t *testing.T) {
	const id = 0x1234
	other := dnsmessage.MustNewName("evil.flycast.")
	alias := dnsmessage.MustNewName("alias.flycast.")
	tests := []struct {
		name      string
		id        uint16
		edit      func(*dnsmessage.Message)
		wantErr   error // errMismatch, or nil
		wantAddrs []netip.Addr
		wantNeg   error // errNXDomain / errNoAAAA in the result
		truncated bool
	}{
		{name: "matching answer", id: id, wantAddrs: []netip.Addr{testAddr}},
		{name: "name in other case", id: id, edit: func(m *dnsmessage.Message) {
			n := dnsmessage.MustNewName("MyApp.FLYCAST.")
			m.Questions[0].Name = n
			m.Answers[0].Header.Name = n
		}, wantAddrs: []netip.Addr{testAddr}},
		{name: "other ID", id: id + 1, wantErr: errMismatch},
		{name: "not a response", id: id, edit: func(m *dnsmessage.Message) { m.Header.Response = false }, wantErr: errMismatch},
		{name: "question for another name", id: id, edit: func(m *dnsmessage.Message) {
			m.Questions[0].Name = other
			m.Answers[0].Header.Name = other
		}, wantErr: errMismatch},
		{name: "question for type A", id: id, edit: func(m *dnsmessage.Message) { m.Questions[0].Type = dnsmessage.TypeA }, wantErr: errMismatch},
		{name: "question in class CHAOS", id: id, edit: func(m *dnsmessage.Message) { m.Questions[0].Class = dnsmessage.ClassCHAOS }, wantErr: errMismatch},
		{name: "no question", id: id, edit: func(m *dnsmessage.Message) { m.Questions = nil }, wantErr: errMismatch},
		{name: "two questions", id: id, edit: func(m *dnsmessage.Message) {
			m.Questions = append(m.Questions, dnsmessage.Question{Name: other, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET})
		}, wantErr: errMismatch},
		{name: "truncated matching answer", id: id, edit: func(m *dnsmessage.Message) { m.Header.Truncated = true; m.Answers = nil }, truncated: true},
		{name: "truncated answer to another question", id: id, edit: func(m *dnsmessage.Message) {
			m.Header.Truncated = true
			m.Questions[0].Name = other
		}, wantErr: errMismatch},
		{name: "records for another name are ignored", id: id, edit: func(m *dnsmessage.Message) {
			m.Answers = append(m.Answers, aaaa(other, otherAddr))
		}, wantAddrs: []netip.Addr{testAddr}},
		{name: "only records for another name", id: id, edit: func(m *dnsmessage.Message) {
			m.Answers = []dnsmessage.Resource{aaaa(other, otherAddr)}
		}, wantNeg: errNoAAAA},
		{name: "records in another class are ignored", id: id, edit: func(m *dnsmessage.Message) {
			r := aaaa(testQName, otherAddr)
			r.Header.Class = dnsmessage.ClassCHAOS
			m.Answers = append(m.Answers, r)
		}, wantAddrs: []netip.Addr{testAddr}},
		{name: "CNAME chain is followed", id: id, edit: func(m *dnsmessage.Message) {
			m.Answers = []dnsmessage.Resource{
				{Header: dnsmessage.ResourceHeader{Name: testQName, Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: 30},
					Body: &dnsmessage.CNAMEResource{CNAME: alias}},
				aaaa(alias, otherAddr),
			}
		}, wantAddrs: []netip.Addr{otherAddr}},
		{name: "CNAME of another name is not followed", id: id, edit: func(m *dnsmessage.Message) {
			m.Answers = []dnsmessage.Resource{
				{Header: dnsmessage.ResourceHeader{Name: other, Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: 30},
					Body: &dnsmessage.CNAMEResource{CNAME: alias}},
				aaaa(alias, otherAddr),
			}
		}, wantNeg: errNoAAAA},
		{name: "NXDOMAIN for the name", id: id, edit: func(m *dnsmessage.Message) {
			m.Header.RCode = dnsmessage.RCodeNameError
			m.Answers = nil
		}, wantNeg: errNXDomain},
		{name: "NXDOMAIN for another name", id: id, edit: func(m *dnsmessage.Message) {
			m.Header.RCode = dnsmessage.RCodeNameError
			m.Questions[0].Name = other
			m.Answers = nil
		}, wantErr: errMismatch},
	}
	r := newResolver(netip.AddrPort{}, nil, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, truncated, err := r.parseResponse(dnsResponse(t, tt.id, tt.edit), id, testQuestion)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if truncated != tt.truncated {
				t.Errorf("truncated = %v, want %v", truncated, tt.truncated)
			}
			if err != nil {
				return
			}
			if !errors.Is(res.err, tt.wantNeg) || (tt.wantNeg == nil) != (res.err == nil) {
				t.Errorf("result err = %v, want %v", res.err, tt.wantNeg)
			}
			if len(res.addrs) != len(tt.wantAddrs) {
				t.Fatalf("addrs = %v, want %v", res.addrs, tt.wantAddrs)
			}
			for i := range res.addrs {
				if res.addrs[i] != tt.wantAddrs[i] {
					t.Errorf("addrs = %v, want %v", res.addrs, tt.wantAddrs)
				}
			}
		})
	}
}

// FuzzParseResponse: whatever comes back, no panic, and addresses are only
// ever taken from a message whose header and question match the query.
func FuzzParseResponse(f *testing.F) {
	const id = 0x4242
	f.Add(dnsResponse(f, id, nil))
	f.Add(dnsResponse(f, id+1, nil))
	f.Add(dnsResponse(f, id, func(m *dnsmessage.Message) { m.Questions[0].Type = dnsmessage.TypeA }))
	f.Add(dnsResponse(f, id, func(m *dnsmessage.Message) { m.Header.Truncated = true }))
	f.Add(dnsResponse(f, id, func(m *dnsmessage.Message) { m.Header.RCode = dnsmessage.RCodeNameError }))
	f.Add([]byte{0x42, 0x42, 0x80, 0, 0, 1})
	r := newResolver(netip.AddrPort{}, nil, nil)
	r.now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, _, err := r.parseResponse(msg, id, testQuestion)
		if err != nil || len(res.addrs) == 0 {
			return
		}
		var p dnsmessage.Parser
		h, perr := p.Start(msg)
		if perr != nil || h.ID != id || !h.Response {
			t.Fatalf("addresses %v taken from a message with header %+v (%v)", res.addrs, h, perr)
		}
		qs, qerr := p.AllQuestions()
		if qerr != nil || len(qs) != 1 || !sameName(qs[0].Name, testQName) || qs[0].Type != dnsmessage.TypeAAAA || qs[0].Class != dnsmessage.ClassINET {
			t.Fatalf("addresses %v taken from an answer to %v (%v)", res.addrs, qs, qerr)
		}
		if res.expires.After(r.now().Add(dnsCacheTTL)) {
			t.Fatalf("expiry %v beyond the cache cap", res.expires)
		}
	})
}
