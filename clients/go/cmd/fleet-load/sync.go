package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	metricsv1 "metrics/clients/go/gen/metrics/v1"
)

// A broken stream is reopened after a backoff that doubles from reopenMin up to reopenMax (with
// jitter), back to reopenMin once a stream has had an acknowledgement.
const (
	reopenMin = 100 * time.Millisecond
	reopenMax = 2 * time.Second
)

// openStreams starts the devices, at most --open-rate a second, spread round robin over the
// connections, and closes allOpen once every device has tried to open its stream once.
func (r *runner) openStreams(conns []*grpc.ClientConn, allOpen chan<- struct{}) {
	clients := make([]metricsv1.ReceiverServiceClient, len(conns))
	for i, conn := range conns {
		clients[i] = metricsv1.NewReceiverServiceClient(conn)
	}
	var interval time.Duration // between two sends of a device; 0 = closed loop
	if r.cfg.rate > 0 {
		interval = time.Duration(float64(r.cfg.streams) * float64(r.cfg.batch) / r.cfg.rate * float64(time.Second))
	}
	var firstTries sync.WaitGroup
	firstTries.Add(r.cfg.streams)
	timer := newStoppedTimer()
	began := time.Now()
	for i := range r.cfg.streams {
		due := time.Duration(float64(i) / r.cfg.openRate * float64(time.Second))
		if wait := due - time.Since(began); wait > 0 && !r.pause(timer, wait) {
			firstTries.Add(i - r.cfg.streams)
			break
		}
		d := newDevice(r, i, clients[i%len(clients)], interval)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			d.run(firstTries.Done)
		}()
	}
	firstTries.Wait()
	close(allOpen)
}

// device is one stream's sender: one-reading batches (or --batch readings) of one sensor, with
// sequence 1, 2, 3, ...
type device struct {
	r        *runner
	id       int
	sensor   int
	client   metricsv1.ReceiverServiceClient
	interval time.Duration
	seq      int64
	req      *metricsv1.SyncMetricsRequest
	sentAt   []atomic.Int64 // when sequence q was sent (ns after runner.base), at q % window
}

func newDevice(r *runner, id int, client metricsv1.ReceiverServiceClient, interval time.Duration) *device {
	d := &device{
		r:        r,
		id:       id,
		sensor:   id % r.cfg.sensors,
		client:   client,
		interval: interval,
		req:      &metricsv1.SyncMetricsRequest{Metrics: make([]*metricsv1.Metric, r.cfg.batch)},
		sentAt:   make([]atomic.Int64, r.cfg.window),
	}
	for j := range d.req.Metrics {
		d.req.Metrics[j] = &metricsv1.Metric{MetricType: metricType}
		if r.cfg.clientTime {
			d.req.Metrics[j].ReadingTime = &timestamppb.Timestamp{}
		}
	}
	return d
}

// run keeps the device's stream open until sending stops, reopening it when it breaks; firstTry
// is called once the first stream was opened (or failed to open).
func (d *device) run(firstTry func()) {
	backoff := reopenMin
	timer := newStoppedTimer()
	for {
		acked := d.session(firstTry)
		firstTry = nil
		if d.r.stopping() || d.r.ctx.Err() != nil {
			return
		}
		if acked {
			backoff = reopenMin
		}
		wait := backoff/2 + rand.N(backoff) // backoff ± 50%
		backoff = min(2*backoff, reopenMax)
		if !d.r.pause(timer, wait) {
			return
		}
		d.r.st.reopened.Add(1)
	}
}

// session runs one stream until it ends: after sending stopped and every batch was acknowledged,
// or when it breaks. It reports whether any batch was acknowledged OK.
func (d *device) session(firstTry func()) (acked bool) {
	st := &d.r.st
	ctx, cancel := context.WithCancel(d.r.ctx)
	defer cancel()
	stream, err := d.client.SyncMetrics(ctx)
	if firstTry != nil {
		firstTry()
	}
	if err != nil {
		st.fail(grpcKey(err))
		return false
	}
	st.open.Add(1)
	defer st.open.Add(-1)

	// The window: the sender puts a token in before each send, the receiver takes one out per
	// acknowledgement.
	slots := make(chan struct{}, d.r.cfg.window)
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		d.send(ctx, stream, slots)
	}()

	ack := new(metricsv1.SyncMetricsResponse)
	window := int64(d.r.cfg.window)
	for {
		err := stream.RecvMsg(ack)
		if errors.Is(err, io.EOF) {
			break // the server ended the stream with OK: after CloseSend, every batch was acknowledged
		}
		if err != nil {
			st.fail(grpcKey(err)) // CANCELLED if abandoned: its batches in flight have no answer
			break
		}
		sentAt := d.r.base.Add(time.Duration(d.sentAt[ack.GetSequence()%window].Load()))
		if c := ack.GetStatus().GetCode(); c != 0 {
			st.fail(statusKey(c))
		} else {
			acked = true
			st.ok(d.id, sentAt, uint64(ack.GetAcceptedCount()))
		}
		select {
		case <-slots:
		default:
		}
	}
	cancel()
	<-senderDone
	return acked
}

// send sends batches until sending stops (then half-closes the stream) or the stream ends: as soon
// as the window allows (closed loop), or every interval from a random phase (paced) if the window
// allows by then.
func (d *device) send(ctx context.Context, stream grpc.BidiStreamingClient[metricsv1.SyncMetricsRequest, metricsv1.SyncMetricsResponse], slots chan struct{}) {
	r := d.r
	defer stream.CloseSend()
	var timer *time.Timer
	var next time.Time
	if d.interval > 0 {
		timer = newStoppedTimer()
		defer timer.Stop()
		next = time.Now().Add(rand.N(d.interval))
	}
	window := int64(r.cfg.window)
	for {
		if d.interval > 0 {
			if wait := time.Until(next); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-r.stop:
					return
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case slots <- struct{}{}:
		case <-r.stop:
			return
		case <-ctx.Done():
			return
		}
		if r.stopping() {
			return
		}
		d.seq++
		d.req.Sequence = d.seq
		r.fillMetrics(d.req.Metrics, d.sensor)
		// Stored before the send: the acknowledgement cannot come earlier.
		d.sentAt[d.seq%window].Store(int64(time.Since(r.base)))
		// SendMsg has encoded the request when it returns, so it is reused.
		if err := stream.SendMsg(d.req); err != nil {
			return // the stream is broken: the receiver gets the real error
		}
		r.st.sent.Add(1)
		if d.interval > 0 {
			next = next.Add(d.interval)
			if now := time.Now(); now.Sub(next) > d.interval {
				next = now // fell behind (the window was full): no burst to catch up
			}
		}
	}
}
