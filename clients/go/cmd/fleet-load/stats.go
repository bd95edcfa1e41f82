package main

import (
	"context"
	"errors"
	"io"
	"math"
	"math/bits"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/status"
)

// Phases of a run; only OK calls completed while measuring count towards the rate and latency.
const (
	phaseWarmup int32 = iota
	phaseMeasuring
	phaseDone
)

// stats are the run's counters, shared by every worker and stream (atomics, no locks on the hot path).
type stats struct {
	phase            atomic.Int32
	sent             atomic.Uint64 // messages (calls, stream batches) sent
	okCalls          atomic.Uint64 // OK calls or acknowledged batches, whole run
	ackedReadings    atomic.Uint64 // readings acknowledged OK, whole run
	measuredReadings atomic.Uint64 // readings acknowledged OK while measuring
	errorCount       atomic.Uint64
	errorsByKey      sync.Map      // string -> *atomic.Uint64
	open             atomic.Int64  // sync streams open now
	reopened         atomic.Uint64 // sync streams reopened after breaking
	latency          histogram
}

// ok counts an OK call (or acknowledged batch) that was sent at start and carried readings.
func (s *stats) ok(shard int, start time.Time, readings uint64) {
	s.okCalls.Add(1)
	s.ackedReadings.Add(readings)
	if s.phase.Load() == phaseMeasuring {
		s.measuredReadings.Add(readings)
		s.latency.record(shard, time.Since(start))
	}
}

func (s *stats) fail(key string) {
	s.errorCount.Add(1)
	if c, ok := s.errorsByKey.Load(key); ok {
		c.(*atomic.Uint64).Add(1)
		return
	}
	c, _ := s.errorsByKey.LoadOrStore(key, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
}

func (s *stats) errors() map[string]uint64 {
	m := map[string]uint64{}
	s.errorsByKey.Range(func(k, v any) bool {
		m[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return m
}

// grpcKey is a failed call's gRPC status code name, e.g. "UNAVAILABLE".
func grpcKey(err error) string {
	return code.Code(status.Code(err)).String()
}

// statusKey is a non-OK acknowledgement status code name, e.g. "RESOURCE_EXHAUSTED".
func statusKey(c int32) string {
	return code.Code(c).String()
}

var httpKeys sync.Map // int -> string, so that counting a status allocates nothing

func httpStatusKey(statusCode int) string {
	if k, ok := httpKeys.Load(statusCode); ok {
		return k.(string)
	}
	k := strconv.Itoa(statusCode)
	httpKeys.Store(statusCode, k)
	return k
}

// transportKey names an HTTP call that got no response at all.
func transportKey(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ECONNREFUSED"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "ECONNRESET"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.Is(err, context.Canceled):
		return "CANCELLED"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "TIMEOUT"
	default:
		return "TRANSPORT"
	}
}

// histogram of latencies in microseconds: exact below 64 µs, then 32 buckets per power of two (at
// most ~1.6% off). Sharded by worker so that concurrent records rarely touch the same cache line.
const (
	histLinear  = 64
	histSub     = 32
	histBuckets = histLinear + 58*histSub
	histShards  = 32
)

type histShard struct {
	counts [histBuckets]atomic.Uint64
}

type histogram struct {
	shards [histShards]histShard
	max    atomic.Uint64 // µs, exact
}

func bucketOf(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	shift := bits.Len64(v) - 6 // v>>shift is in [32, 63]
	return histLinear + (shift-1)*histSub + int(v>>shift) - histSub
}

// bucketValue is the middle of bucket b, in µs.
func bucketValue(b int) float64 {
	if b < histLinear {
		return float64(b)
	}
	shift := (b-histLinear)/histSub + 1
	m := uint64((b-histLinear)%histSub + histSub)
	return float64(m<<shift) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(shard int, d time.Duration) {
	us := uint64(max(d.Microseconds(), 0))
	h.shards[shard%histShards].counts[bucketOf(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

type latencyMs struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// summary is the number of recorded latencies and their percentiles (nearest rank) in ms.
func (h *histogram) summary() (uint64, latencyMs) {
	var counts [histBuckets]uint64
	var total uint64
	for i := range h.shards {
		for b := range counts {
			n := h.shards[i].counts[b].Load()
			counts[b] += n
			total += n
		}
	}
	if total == 0 {
		return 0, latencyMs{}
	}
	maxUs := float64(h.max.Load())
	quantile := func(q float64) float64 {
		rank := uint64(math.Ceil(q * float64(total)))
		var seen uint64
		b := histBuckets - 1
		for i, n := range counts {
			seen += n
			if seen >= rank {
				b = i
				break
			}
		}
		return ms(min(bucketValue(b), maxUs))
	}
	return total, latencyMs{P50: quantile(0.50), P90: quantile(0.90), P99: quantile(0.99), Max: ms(maxUs)}
}

func ms(us float64) float64 { return round(us/1000, 3) }

func round(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}
