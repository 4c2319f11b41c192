package flyapitest

import (
	"sync"
	"time"
)

// FaultKind selects what a scripted fault does to a matching GraphQL request.
type FaultKind int

const (
	// FaultHTTP401 answers HTTP 401 with a JSON error body, whatever the token.
	FaultHTTP401 FaultKind = iota + 1
	// FaultUnauthorizedCode answers HTTP 200 with data null and an error whose
	// extensions.code is "UNAUTHORIZED", whatever the token.
	FaultUnauthorizedCode
	// Fault429 answers HTTP 429 with a Retry-After header (Fault.RetryAfter,
	// default 1s, rounded up to whole seconds).
	Fault429
	// Fault502 answers HTTP 502 without running the operation.
	Fault502
	// Fault503 answers HTTP 503 without running the operation.
	Fault503
	// FaultSlow waits Fault.Delay (default 2s, or until the client gives up)
	// and then answers normally.
	FaultSlow
	// FaultApplyThen502 runs the operation (a mutation takes effect) and then
	// answers HTTP 502: the ambiguous failure a client must reconcile.
	FaultApplyThen502
	// FaultServerErrorCode answers HTTP 200 with data null and an error with
	// extensions.code "SERVER_ERROR", without running the operation.
	FaultServerErrorCode
	// FaultDropConnection closes the TCP connection without any answer.
	FaultDropConnection
)

func (k FaultKind) String() string {
	switch k {
	case FaultHTTP401:
		return "http401"
	case FaultUnauthorizedCode:
		return "unauthorized-code"
	case Fault429:
		return "429"
	case Fault502:
		return "502"
	case Fault503:
		return "503"
	case FaultSlow:
		return "slow"
	case FaultApplyThen502:
		return "apply-then-502"
	case FaultServerErrorCode:
		return "server-error-code"
	case FaultDropConnection:
		return "drop-connection"
	}
	return "unknown"
}

// Fault is one scripted misbehaviour of the GraphQL endpoint.
type Fault struct {
	// Op is the top-level field the fault applies to ("addWireGuardPeer",
	// "organization", ...); "" matches every request.
	Op   string
	Kind FaultKind
	// Times is how many matching requests the fault affects; 0 = forever.
	Times int
	// Delay is used by FaultSlow.
	Delay time.Duration
	// RetryAfter is used by Fault429.
	RetryAfter time.Duration
}

type faultEntry struct {
	f    Fault
	left int // remaining uses; <0 = forever
}

// Faults is the scripted fault list of a Server. Rules are tried in the
// order they were added; the first one that matches a request fires and,
// when its Times is used up, disappears. Safe for concurrent use.
type Faults struct {
	mu    sync.Mutex
	list  []*faultEntry
	fired int
}

// Set replaces every scripted fault with the given ones.
func (f *Faults) Set(faults ...Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = nil
	for _, x := range faults {
		f.addLocked(x)
	}
}

// Add appends a fault after the existing ones.
func (f *Faults) Add(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addLocked(fault)
}

func (f *Faults) addLocked(x Fault) {
	left := x.Times
	if left <= 0 {
		left = -1
	}
	f.list = append(f.list, &faultEntry{f: x, left: left})
}

// Clear removes every scripted fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = nil
}

// Fired is how many requests were affected by a fault so far.
func (f *Faults) Fired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// Pending is how many fault rules are still active.
func (f *Faults) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.list)
}

// take returns the first fault matching any of the request's top-level
// fields and consumes one use of it.
func (f *Faults) take(ops []string) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.list {
		match := e.f.Op == ""
		for _, op := range ops {
			if op == e.f.Op {
				match = true
			}
		}
		if !match {
			continue
		}
		if e.left > 0 {
			e.left--
			if e.left == 0 {
				f.list = append(f.list[:i:i], f.list[i+1:]...)
			}
		}
		f.fired++
		return e.f, true
	}
	return Fault{}, false
}
