package flyapitest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

const dnsTTL = 5

// lookup resolves a Fly-style name inside org o's network. known reports
// whether the name exists (NOERROR) or not (NXDOMAIN).
func (s *Server) lookup(o *orgState, name string) (addrs []netip.Addr, known bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if app, ok := strings.CutSuffix(name, ".flycast"); ok {
		if i := s.appIndex(app); i >= 0 {
			return []netip.Addr{flycastAddr(o.prefix, i)}, true
		}
		return nil, false
	}
	rest, ok := strings.CutSuffix(name, ".internal")
	if !ok {
		return nil, false
	}
	if rest == "_api" {
		return []netip.Addr{apiInternalAddr(o.prefix)}, true
	}
	if peer, ok := strings.CutSuffix(rest, "._peer"); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range o.peers {
			if strings.EqualFold(p.Name, peer) {
				return []netip.Addr{p.PeerIP}, true
			}
		}
		return nil, false
	}
	labels := strings.Split(rest, ".")
	app := labels[len(labels)-1]
	i := s.appIndex(app)
	if i < 0 {
		return nil, false
	}
	switch len(labels) {
	case 1:
	case 2:
		if labels[0] != "global" && !s.isRegion(labels[0]) {
			return nil, false
		}
	default:
		// top<N>.nearest.of.<app>.internal
		if !(len(labels) == 4 && strings.HasPrefix(labels[0], "top") && labels[1] == "nearest" && labels[2] == "of") {
			return nil, false
		}
	}
	return []netip.Addr{internalAddr(o.prefix, i)}, true
}

func (s *Server) isRegion(code string) bool {
	for _, r := range s.regions {
		if r.Code == code {
			return true
		}
	}
	return false
}

// dnsAnswer builds the reply to one query (nil = drop it).
func (g *gateway) dnsAnswer(o *orgState, req []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil
	}
	if h.Response {
		return nil
	}
	rh := dnsmessage.Header{
		ID: h.ID, Response: true, OpCode: h.OpCode, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true,
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		rh.RCode = dnsmessage.RCodeFormatError
		return buildDNS(rh, nil, nil)
	}
	q := qs[0]
	if h.OpCode != 0 {
		rh.RCode = dnsmessage.RCodeNotImplemented
		return buildDNS(rh, &q, nil)
	}
	addrs, known := g.s.lookup(o, q.Name.String())
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
		return buildDNS(rh, &q, nil)
	}
	if q.Type != dnsmessage.TypeAAAA || (q.Class != dnsmessage.ClassINET && q.Class != dnsmessage.ClassANY) {
		addrs = nil // NOERROR, no answers
	}
	return buildDNS(rh, &q, addrs)
}

func buildDNS(h dnsmessage.Header, q *dnsmessage.Question, addrs []netip.Addr) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if q != nil {
		if err := b.StartQuestions(); err != nil {
			return nil
		}
		if err := b.Question(*q); err != nil {
			return nil
		}
		if len(addrs) > 0 {
			if err := b.StartAnswers(); err != nil {
				return nil
			}
			for _, a := range addrs {
				rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
				if err := b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()}); err != nil {
					return nil
				}
			}
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

func (g *gateway) serveDNSUDP(o *orgState, c net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := g.dnsAnswer(o, buf[:n]); resp != nil {
			_, _ = c.WriteTo(resp, addr)
		}
	}
}

func (g *gateway) serveDNSTCP(o *orgState, c net.Conn) {
	var lb [2]byte
	buf := make([]byte, 65535)
	for {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lb[:]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		resp := g.dnsAnswer(o, buf[:n])
		if resp == nil {
			return
		}
		out := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		copy(out[2:], resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
