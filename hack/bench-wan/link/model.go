// Package link is a small userspace WAN emulator for the tunnel benchmark
// (hack/bench-wan), since the netem qdisc is not available on the benchmark
// machines: a UDP relay (Relay) and a relay of IP packets between two TUN
// devices (TunRelay, TunPath) whose two directions each delay, jitter,
// lose, rate-limit and drop-tail-queue packets, and a TCP relay
// (StreamRelay) that delays and rate-limits a byte stream.
//
// The decisions are made by Model, a pure function of arrival times, sizes
// and a seeded random source, so they are unit-tested deterministically;
// the relays move the packets and send each one at the time Model gave it,
// with a high-resolution sleep on a locked OS thread (Go's timers wake up
// about 1 ms late when the process is idle, which would turn a smooth
// 200 Mbit/s stream into bursts of ~17 packets).
package link

import (
	"fmt"
	"math/rand"
	"time"
)

// Params describe one direction of a link.
type Params struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter adds a uniform random delay in [-Jitter, +Jitter] (clamped at
	// zero total). Datagrams are never reordered: a datagram is not
	// delivered before the one ahead of it, as on a single path.
	Jitter time.Duration
	// Loss is the probability (0..1) that a datagram is lost on the wire,
	// independently of the others (Bernoulli). Lost datagrams do not use
	// the bottleneck.
	Loss float64
	// RateBits caps the link at this many bits per second (0 = no cap). A
	// datagram occupies the bottleneck for size*8/RateBits.
	RateBits float64
	// QueueBytes is the drop-tail limit of the bottleneck: the bytes
	// admitted but not yet serialised. A datagram that would exceed it is
	// dropped. 0 means DefaultQueue. Only meaningful with RateBits.
	QueueBytes int
	// Seed seeds the random source of losses and jitter.
	Seed int64
}

// DefaultQueue is the bottleneck buffer when Params.QueueBytes is 0:
// 1.25 MB, 50 ms at 200 Mbit/s.
const DefaultQueue = 1250000

func (p Params) String() string {
	s := fmt.Sprintf("delay %v", p.Delay)
	if p.Jitter > 0 {
		s += fmt.Sprintf(" ±%v", p.Jitter)
	}
	if p.Loss > 0 {
		s += fmt.Sprintf(" loss %.2g%%", p.Loss*100)
	}
	if p.RateBits > 0 {
		s += fmt.Sprintf(" rate %.0f Mbit/s queue %d B", p.RateBits/1e6, p.queue())
	}
	return s
}

// Validate names the first bad field.
func (p Params) Validate() error {
	switch {
	case p.Delay < 0:
		return fmt.Errorf("link: delay %v is negative", p.Delay)
	case p.Jitter < 0:
		return fmt.Errorf("link: jitter %v is negative", p.Jitter)
	case p.Loss < 0 || p.Loss > 1:
		return fmt.Errorf("link: loss %v is outside 0..1", p.Loss)
	case p.RateBits < 0:
		return fmt.Errorf("link: rate %v bit/s is negative", p.RateBits)
	case p.QueueBytes < 0:
		return fmt.Errorf("link: queue %d bytes is negative", p.QueueBytes)
	}
	return nil
}

// validPair checks both directions' parameters with valid.
func validPair(up, down Params, valid func(Params) error) error {
	if err := valid(up); err != nil {
		return err
	}
	return valid(down)
}

func (p Params) queue() int {
	if p.QueueBytes > 0 {
		return p.QueueBytes
	}
	return DefaultQueue
}

// Stats count what a direction did with the datagrams offered to it.
type Stats struct {
	Offered, Delivered int64 // datagrams
	Lost               int64 // random loss (Params.Loss)
	QueueDrops         int64 // drop-tail at the bottleneck
	OfferedBytes       int64
	MaxQueueBytes      int // largest bottleneck backlog seen
}

// Model decides the fate of each datagram of one direction. Not safe for
// concurrent use.
type Model struct {
	p         Params
	rng       *rand.Rand
	busyUntil time.Time // when the bottleneck has serialised every admitted byte
	lastDue   time.Time // due time of the previous delivered datagram
	stats     Stats
}

// NewModel returns a Model for p (p must be valid).
func NewModel(p Params) *Model {
	return &Model{p: p, rng: rand.New(rand.NewSource(p.Seed))}
}

// Params returns the model's parameters.
func (m *Model) Params() Params { return m.p }

// Stats returns the counts so far.
func (m *Model) Stats() Stats { return m.stats }

// Room reports how long after now a datagram (or chunk) of size bytes
// must wait before the bottleneck queue can take it: 0 when it fits now or
// when there is no rate cap. A byte stream (StreamRelay) waits that long
// instead of being dropped. A size above the queue limit waits for an
// empty queue.
func (m *Model) Room(now time.Time, size int) time.Duration {
	if m.p.RateBits <= 0 || !m.busyUntil.After(now) {
		return 0
	}
	backlog := float64(m.busyUntil.Sub(now)) * m.p.RateBits / 8 / float64(time.Second)
	excess := backlog + float64(min(size, m.p.queue())) - float64(m.p.queue())
	if excess <= 0 {
		return 0
	}
	return max(time.Duration(excess*8/m.p.RateBits*float64(time.Second)), time.Microsecond)
}

// Admit is called when a datagram of size bytes arrives at now (arrival
// times must not go backwards). It reports whether the datagram survives
// and, if so, when it must be delivered.
func (m *Model) Admit(now time.Time, size int) (due time.Time, ok bool) {
	m.stats.Offered++
	m.stats.OfferedBytes += int64(size)
	if m.p.Loss > 0 && m.rng.Float64() < m.p.Loss {
		m.stats.Lost++
		return time.Time{}, false
	}
	leave := now // when the last bit has left the bottleneck
	if m.p.RateBits > 0 {
		start := now
		if m.busyUntil.After(now) {
			start = m.busyUntil
			backlog := int(float64(m.busyUntil.Sub(now)) * m.p.RateBits / 8 / float64(time.Second))
			if backlog+size > m.p.queue() {
				m.stats.QueueDrops++
				return time.Time{}, false
			}
			m.stats.MaxQueueBytes = max(m.stats.MaxQueueBytes, backlog+size)
		}
		leave = start.Add(time.Duration(float64(size*8) / m.p.RateBits * float64(time.Second)))
		m.busyUntil = leave
	}
	d := m.p.Delay
	if m.p.Jitter > 0 {
		d += time.Duration(m.rng.Int63n(int64(2*m.p.Jitter)+1)) - m.p.Jitter
		d = max(d, 0)
	}
	due = leave.Add(d)
	if due.Before(m.lastDue) {
		due = m.lastDue
	}
	m.lastDue = due
	m.stats.Delivered++
	return due, true
}
