package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// DNS behaviour inside the tunnel.
const (
	dnsAttemptTimeout = 1 * time.Second
	dnsAttempts       = 2
	dnsCacheTTL       = 2 * time.Second // cap; the record TTL wins when lower
	dnsNegativeTTL    = 1 * time.Second
	dnsCacheMax       = 1024
	dnsEDNSSize       = 1232
)

var (
	errNXDomain = errors.New("no such host (NXDOMAIN)")
	errNoAAAA   = errors.New("no AAAA record")
)

type dnsResult struct {
	addrs   []netip.Addr
	err     error // errNXDomain or errNoAAAA for negative answers
	expires time.Time
}

type dnsCall struct {
	done chan struct{}
	res  dnsResult
}

// resolver asks Fly DNS (<prefix48>::3) for AAAA records through the tunnel.
type resolver struct {
	server netip.AddrPort
	dial   func(netip.AddrPort) (*gonet.UDPConn, error)
	// dialTCP is used when a UDP answer is truncated (nil: no fallback).
	dialTCP func(context.Context, netip.AddrPort) (net.Conn, error)
	now     func() time.Time
	// onLookup is called once per query sent ("ok", "nxdomain", "error") and
	// per cache hit ("cached").
	onLookup func(result string)

	mu       sync.Mutex
	cache    map[string]dnsResult
	inflight map[string]*dnsCall
}

func newResolver(server netip.AddrPort, dial func(netip.AddrPort) (*gonet.UDPConn, error), onLookup func(string)) *resolver {
	if onLookup == nil {
		onLookup = func(string) {}
	}
	return &resolver{server: server, dial: dial, now: time.Now, onLookup: onLookup,
		cache: map[string]dnsResult{}, inflight: map[string]*dnsCall{}}
}

// LookupAAAA returns the addresses of host, from a short cache when fresh.
// Concurrent lookups of the same name share one query.
func (r *resolver) LookupAAAA(ctx context.Context, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	if res, ok := r.cache[host]; ok && r.now().Before(res.expires) {
		r.mu.Unlock()
		r.onLookup("cached")
		return res.addrs, res.err
	}
	if c, ok := r.inflight[host]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.res.addrs, c.res.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &dnsCall{done: make(chan struct{})}
	r.inflight[host] = c
	r.mu.Unlock()

	c.res = r.query(ctx, host)

	r.mu.Lock()
	delete(r.inflight, host)
	if c.res.err == nil || errors.Is(c.res.err, errNXDomain) || errors.Is(c.res.err, errNoAAAA) {
		if len(r.cache) >= dnsCacheMax {
			clear(r.cache)
		}
		r.cache[host] = c.res
	}
	r.mu.Unlock()
	close(c.done)
	return c.res.addrs, c.res.err
}

// Probe sends one uncached query and reports whether the server answered at
// all (an NXDOMAIN answer counts: it proves the tunnel and DNS work).
func (r *resolver) Probe(ctx context.Context, name string) error {
	res := r.query(ctx, name)
	if res.err == nil || errors.Is(res.err, errNXDomain) || errors.Is(res.err, errNoAAAA) {
		return nil
	}
	return res.err
}

func (r *resolver) query(ctx context.Context, host string) dnsResult {
	var lastErr error
	for attempt := 0; attempt < dnsAttempts; attempt++ {
		if ctx.Err() != nil {
			break
		}
		res, err := r.exchange(ctx, host)
		if err == nil {
			switch {
			case errors.Is(res.err, errNXDomain), errors.Is(res.err, errNoAAAA):
				r.onLookup("nxdomain")
			default:
				r.onLookup("ok")
			}
			return res
		}
		lastErr = err
	}
	r.onLookup("error")
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return dnsResult{err: fmt.Errorf("DNS query for %s via %s: %w", host, r.server, lastErr)}
}

func (r *resolver) exchange(ctx context.Context, host string) (dnsResult, error) {
	name, err := dnsmessage.NewName(host + ".")
	if err != nil {
		return dnsResult{}, err
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	question := dnsmessage.Question{Name: name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{question},
	}
	// EDNS0: accept answers up to 1232 bytes over UDP (an app with many
	// Machines has many AAAA records); bigger ones come back truncated and
	// are asked again over TCP.
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(dnsEDNSSize, dnsmessage.RCodeSuccess, false); err != nil {
		return dnsResult{}, err
	}
	msg.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	q, err := msg.Pack()
	if err != nil {
		return dnsResult{}, err
	}
	conn, err := r.dial(r.server)
	if err != nil {
		return dnsResult{}, err
	}
	defer conn.Close()
	deadline := time.Now().Add(dnsAttemptTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	// Abort the read when ctx is cancelled.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(q); err != nil {
		return dnsResult{}, err
	}
	buf := make([]byte, dnsEDNSSize+256)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return dnsResult{}, err
		}
		res, truncated, err := r.parseResponse(buf[:n], id, question)
		if err != nil {
			// A stray, malformed or spoofed datagram: anyone on the path
			// can send one, so it must match ID and question; keep waiting
			// for the real answer until the deadline.
			continue
		}
		if truncated && r.dialTCP != nil {
			return r.exchangeTCP(ctx, q, id, question, deadline)
		}
		return res, nil
	}
}

// exchangeTCP asks again over TCP (RFC 7766 framing: 2-byte length).
func (r *resolver) exchangeTCP(ctx context.Context, q []byte, id uint16, question dnsmessage.Question, deadline time.Time) (dnsResult, error) {
	c, err := r.dialTCP(ctx, r.server)
	if err != nil {
		return dnsResult{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	framed := make([]byte, 2+len(q))
	binary.BigEndian.PutUint16(framed, uint16(len(q)))
	copy(framed[2:], q)
	if _, err := c.Write(framed); err != nil {
		return dnsResult{}, err
	}
	var lb [2]byte
	if _, err := io.ReadFull(c, lb[:]); err != nil {
		return dnsResult{}, err
	}
	resp := make([]byte, binary.BigEndian.Uint16(lb[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		return dnsResult{}, err
	}
	res, _, err := r.parseResponse(resp, id, question)
	if err != nil {
		return dnsResult{}, fmt.Errorf("DNS over TCP: %w", err)
	}
	return res, nil
}

// errMismatch is an answer to some other query than the one sent.
var errMismatch = errors.New("answer does not match the query")

// parseResponse checks that msg answers question under id (a response,
// the same ID, exactly one question with the same name, type and class)
// and reads its AAAA records. Only records for the name asked, or for the
// target of a CNAME chain starting at it, count. truncated reports the TC
// bit: the caller asks again over TCP.
func (r *resolver) parseResponse(msg []byte, id uint16, question dnsmessage.Question) (res dnsResult, truncated bool, err error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return dnsResult{}, false, err
	}
	if h.ID != id || !h.Response {
		return dnsResult{}, false, errMismatch
	}
	if err := matchQuestion(&p, question); err != nil {
		return dnsResult{}, false, err
	}
	if h.Truncated {
		return dnsResult{}, true, nil
	}
	res, err = r.parseAnswer(&p, h, question.Name)
	return res, false, err
}

// matchQuestion reads the question section: exactly one entry, equal to q
// (names compare case-insensitively, as DNS does).
func matchQuestion(p *dnsmessage.Parser, q dnsmessage.Question) error {
	got, err := p.AllQuestions()
	if err != nil {
		return err
	}
	if len(got) != 1 || got[0].Type != q.Type || got[0].Class != q.Class || !sameName(got[0].Name, q.Name) {
		return errMismatch
	}
	return nil
}

func sameName(a, b dnsmessage.Name) bool {
	return strings.EqualFold(a.String(), b.String())
}

// maxCNAMEs bounds the chain followed from the question's name.
const maxCNAMEs = 8

func (r *resolver) parseAnswer(p *dnsmessage.Parser, h dnsmessage.Header, qname dnsmessage.Name) (dnsResult, error) {
	now := r.now()
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return dnsResult{err: errNXDomain, expires: now.Add(dnsNegativeTTL)}, nil
	default:
		return dnsResult{}, fmt.Errorf("DNS server answered %v", h.RCode)
	}
	res := dnsResult{expires: now.Add(dnsCacheTTL)}
	names := []dnsmessage.Name{qname} // the name asked and the CNAME targets it leads to
	owned := func(n dnsmessage.Name) bool {
		for _, o := range names {
			if sameName(o, n) {
				return true
			}
		}
		return false
	}
	for {
		ah, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return dnsResult{}, err
		}
		switch {
		case ah.Class != dnsmessage.ClassINET || !owned(ah.Name):
			err = p.SkipAnswer()
		case ah.Type == dnsmessage.TypeCNAME:
			var rr dnsmessage.CNAMEResource
			if rr, err = p.CNAMEResource(); err == nil && len(names) <= maxCNAMEs {
				names = append(names, rr.CNAME)
			}
		case ah.Type == dnsmessage.TypeAAAA:
			var rr dnsmessage.AAAAResource
			if rr, err = p.AAAAResource(); err == nil {
				res.addrs = append(res.addrs, netip.AddrFrom16(rr.AAAA))
				if ttl := now.Add(time.Duration(ah.TTL) * time.Second); ttl.Before(res.expires) {
					res.expires = ttl
				}
			}
		default:
			err = p.SkipAnswer()
		}
		if err != nil {
			return dnsResult{}, err
		}
	}
	if len(res.addrs) == 0 {
		return dnsResult{err: errNoAAAA, expires: now.Add(dnsNegativeTTL)}, nil
	}
	return res, nil
}
