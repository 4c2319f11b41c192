package flyapitest

import (
	"fmt"
	"net/netip"
	"sync"
)

// blackholes are the 6PN addresses whose packets the gateway drops.
type blackholes struct {
	mu    sync.RWMutex
	addrs map[netip.Addr]bool
}

func (b *blackholes) set(addrs []netip.Addr, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.addrs == nil {
		b.addrs = map[netip.Addr]bool{}
	}
	for _, a := range addrs {
		if on {
			b.addrs[a] = true
		} else {
			delete(b.addrs, a)
		}
	}
}

// drops reports whether an IPv6 packet is from or to a blackholed address.
func (b *blackholes) drops(p []byte) bool {
	if len(p) < 40 {
		return false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if len(b.addrs) == 0 {
		return false
	}
	src, _ := netip.AddrFromSlice(p[8:24])
	dst, _ := netip.AddrFromSlice(p[24:40])
	return b.addrs[src] || b.addrs[dst]
}

// Blackhole makes name (e.g. "twi-ollama.flycast") in org stop answering,
// or answer again: while on, the gateway drops every packet to or from its
// addresses, as when a Fly Machine vanishes without closing its
// connections. DNS still resolves the name.
func (s *Server) Blackhole(org, name string, on bool) error {
	o := s.findOrg(org)
	if o == nil {
		return fmt.Errorf("flyapitest: no org %q", org)
	}
	addrs, known := s.lookup(o, name)
	if !known || len(addrs) == 0 {
		return fmt.Errorf("flyapitest: no app %q in org %q", name, org)
	}
	s.blackholed.set(addrs, on)
	return nil
}
