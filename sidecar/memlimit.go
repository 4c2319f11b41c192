package sidecar

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultMemoryLimit is the soft Go memory limit when the process has no
// cgroup memory limit and GOMEMLIMIT is not set. It is soft: the GC works
// harder near it, nothing fails above it. wireguard-go allocates a 64 KiB
// buffer per packet in flight, so the Go heap is several times the RSS under
// load; at 48 MiB, 100 parallel downloads made the GC thrash (16 CPU s/GiB),
// the UDP socket overflowed and the test gateway's TCP stalled. At 96 MiB a
// single 1 GiB download peaks at about 50 MiB RSS and 100 streams at about
// 90 MiB. A quarter of the limit is the TCP buffer budget (bufferBudget).
// See docs/benchmarks.md.
const DefaultMemoryLimit = 96 << 20

// cgroup memory limit files, v2 then v1.
var cgroupMemFiles = []string{
	"/sys/fs/cgroup/memory.max",
	"/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// DefaultGCPercent replaces GOGC=100 unless GOGC is set: the heap between
// collections is mostly short-lived packet buffers, and collecting at 1.5x
// instead of 2x the live heap lowered the peak RSS of a 1 GiB download from
// 50-56 to 39 MiB for about 5 % more CPU (docs/benchmarks.md).
const DefaultGCPercent = 50

// SetMemoryLimit applies a Go soft memory limit unless GOMEMLIMIT is set:
// 75% of the cgroup limit when there is one, else DefaultMemoryLimit; and
// DefaultGCPercent unless GOGC is set. It returns the limit applied (0 when
// GOMEMLIMIT decides) and where it came from.
func SetMemoryLimit(getenv func(string) string) (int64, string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
	}
	if getenv("GOMEMLIMIT") != "" {
		return 0, "GOMEMLIMIT"
	}
	limit, source := int64(DefaultMemoryLimit), "default"
	if cg, file := cgroupMemoryLimit(); cg > 0 {
		limit, source = cg/4*3, file
	}
	debug.SetMemoryLimit(limit)
	return limit, source
}

func cgroupMemoryLimit() (int64, string) {
	for _, f := range cgroupMemFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, ""
		}
		n, err := strconv.ParseInt(s, 10, 64)
		// v1 reports "no limit" as a huge number.
		if err != nil || n <= 0 || n >= 1<<50 {
			return 0, ""
		}
		return n, f
	}
	return 0, ""
}
