package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	metricsv1 "metrics/clients/go/gen/metrics/v1"
)

// pacer spreads calls evenly over time for all workers together (open loop): each call takes the
// next free slot of the schedule. When the workers fall behind it (the system is slower than the
// rate), they send as fast as they can, and the schedule restarts from now instead of bursting.
type pacer struct {
	interval int64 // ns between calls
	base     time.Time
	next     atomic.Int64 // ns after base of the next free slot
}

// maxLag is how far behind the schedule a call may be before the schedule restarts.
const maxLag = int64(100 * time.Millisecond)

func newPacer(messagesPerSecond float64) *pacer {
	if messagesPerSecond <= 0 {
		return nil
	}
	return &pacer{interval: max(int64(float64(time.Second)/messagesPerSecond), 1), base: time.Now()}
}

// wait blocks until the caller's slot; false if sending stopped meanwhile.
func (p *pacer) wait(r *runner, t *time.Timer) bool {
	if p == nil {
		return !r.stopping()
	}
	slot := p.next.Add(p.interval) - p.interval
	now := int64(time.Since(p.base))
	if now-slot > maxLag {
		p.next.CompareAndSwap(slot+p.interval, now+p.interval)
		return !r.stopping()
	}
	return r.pause(t, time.Duration(slot-now))
}

// Worker w uses the sensors w, w+C, w+2C, ... (mod sensors) in turn, C the number of workers: with
// as many sensors as workers (the default), each sensor has at most one call in flight.
func (r *runner) nextSensor(s int) int {
	return (s + r.cfg.concurrency) % r.cfg.sensors
}

// startUnary starts the PushMetrics workers, spread round robin over the connections.
func (r *runner) startUnary(conns []*grpc.ClientConn) {
	p := newPacer(r.cfg.rate / float64(r.cfg.batch))
	for w := range r.cfg.concurrency {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.unaryWorker(w, conns[w%len(conns)], p)
		}()
	}
}

func (r *runner) unaryWorker(w int, conn *grpc.ClientConn, p *pacer) {
	// One request and one reply, reused: gRPC has encoded the request when Invoke returns, and
	// decoding resets the reply.
	req := &metricsv1.PushMetricsRequest{Metrics: make([]*metricsv1.Metric, r.cfg.batch)}
	for j := range req.Metrics {
		req.Metrics[j] = &metricsv1.Metric{MetricType: metricType}
		if r.cfg.clientTime {
			req.Metrics[j].ReadingTime = &timestamppb.Timestamp{}
		}
	}
	reply := new(metricsv1.PushMetricsResponse)
	timer := newStoppedTimer()
	for s := w % r.cfg.sensors; p.wait(r, timer); s = r.nextSensor(s) {
		r.fillMetrics(req.Metrics, s)
		start := time.Now()
		r.st.sent.Add(1)
		err := conn.Invoke(r.ctx, metricsv1.ReceiverService_PushMetrics_FullMethodName, req, reply)
		if err != nil {
			r.st.fail(grpcKey(err))
			r.pause(timer, r.cfg.backoff.Duration)
			continue
		}
		r.st.ok(w, start, uint64(reply.GetAcceptedCount()))
	}
}

// fillMetrics makes metrics readings of sensor s (the time is left unset for the server to set).
func (r *runner) fillMetrics(metrics []*metricsv1.Metric, s int) {
	var first int64
	if r.cfg.clientTime {
		first = r.clock.next(s, int64(len(metrics)))
	}
	for j, m := range metrics {
		m.SensorId = r.ids[s]
		m.Value = r.values[s]
		if r.cfg.clientTime {
			us := first + int64(j)
			m.ReadingTime.Seconds = us / 1_000_000
			m.ReadingTime.Nanos = int32(us%1_000_000) * 1000
		}
	}
}

// startHTTP starts the HTTP/1.1 workers (http and legacy modes), sharing one client whose
// connections are kept alive, one per worker.
func (r *runner) startHTTP() error {
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        r.cfg.concurrency,
		MaxIdleConnsPerHost: r.cfg.concurrency,
		MaxConnsPerHost:     r.cfg.concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		TLSClientConfig:     r.cfg.tls,
	}
	scheme := "http://"
	if r.cfg.tls != nil {
		scheme = "https://"
	}
	client := &http.Client{Transport: transport}
	var urls []string // by sensor (legacy), or the one push URL
	if r.cfg.mode == "legacy" {
		urls = make([]string, r.cfg.sensors)
		for i, id := range r.ids {
			urls[i] = scheme + r.cfg.target + "/api/v1/sensors/" + id + "/measurements"
		}
	} else {
		urls = []string{scheme + r.cfg.target + "/v1/metrics:push"}
	}
	if _, err := http.NewRequest(http.MethodPost, urls[len(urls)-1], nil); err != nil {
		return fmt.Errorf("--target %q: %w", r.cfg.target, err)
	}
	p := newPacer(r.cfg.rate / float64(r.cfg.batch))
	for w := range r.cfg.concurrency {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.httpWorker(w, client, urls, p)
		}()
	}
	return nil
}

func (r *runner) httpWorker(w int, client *http.Client, urls []string, p *pacer) {
	legacy := r.cfg.mode == "legacy"
	readings := uint64(r.cfg.batch)
	var body []byte
	timer := newStoppedTimer()
	for s := w % r.cfg.sensors; p.wait(r, timer); s = r.nextSensor(s) {
		url := urls[0]
		if legacy {
			url = urls[s]
			body = r.appendLegacy(body[:0], s)
		} else {
			body = r.appendPush(body[:0], s)
		}
		req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			panic(err) // the URL is checked once, up front
		}
		req.Header.Set("Content-Type", "application/json")
		if r.cfg.token != "" {
			req.Header.Set("Authorization", "Bearer "+r.cfg.token)
		}
		start := time.Now()
		r.st.sent.Add(1)
		resp, err := client.Do(req)
		if err != nil {
			r.st.fail(transportKey(err))
			r.pause(timer, r.cfg.backoff.Duration)
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			r.st.fail(transportKey(err))
			r.pause(timer, r.cfg.backoff.Duration)
		case resp.StatusCode != http.StatusOK:
			r.st.fail(httpStatusKey(resp.StatusCode))
			r.pause(timer, r.cfg.backoff.Duration)
		default:
			r.st.ok(w, start, readings)
		}
	}
}

// appendPush appends a PushMetrics request of sensor s in the JSON mapping:
// {"metrics":[{"sensorId":"fleet-3","metricType":"temperature","value":23,"readingTime":"…"}]}.
func (r *runner) appendPush(b []byte, s int) []byte {
	var first int64
	if r.cfg.clientTime {
		first = r.clock.next(s, int64(r.cfg.batch))
	}
	b = append(b, `{"metrics":[`...)
	for j := range r.cfg.batch {
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sensorId":"`...)
		b = append(b, r.ids[s]...)
		b = append(b, `","metricType":"`+metricType+`","value":`...)
		b = strconv.AppendFloat(b, r.values[s], 'g', -1, 64)
		if r.cfg.clientTime {
			b = append(b, `,"readingTime":"`...)
			b = time.UnixMicro(first+int64(j)).UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// appendLegacy appends a legacy measurement: {"temperature":23,"at":1764300189353} ("at" in
// milliseconds since the Unix epoch).
func (r *runner) appendLegacy(b []byte, s int) []byte {
	b = append(b, `{"temperature":`...)
	b = strconv.AppendFloat(b, r.values[s], 'g', -1, 64)
	if r.cfg.clientTime {
		b = append(b, `,"at":`...)
		b = strconv.AppendInt(b, r.clock.next(s, 1), 10)
	}
	return append(b, '}')
}
