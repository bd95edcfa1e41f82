// Command fleet-load is a load generator for fleets of devices: many sensors, each sending one
// reading per message, to the receiver through Envoy (or straight to a receiver).
//
//	fleet-load --mode unary|http|legacy|sync|mqtt [flags]
//
// Modes: unary (PushMetrics, native gRPC), http (POST /v1/metrics:push, HTTP/1.1 JSON), legacy
// (POST /api/v1/sensors/{id}/measurements), sync (SyncMetrics bidi streams, one per device) and
// mqtt (a connection per device to the MQTT broker, one reading per PUBLISH at QoS 1, docs/mqtt.md).
// It prints one JSON object on stdout at the end (rate, latency, errors, what was acknowledged);
// progress goes to stderr every 2 s. SIGINT/SIGTERM stop it early (it still prints the JSON); a
// second signal abandons the calls in flight.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"metrics/clients/go/internal/cli"
)

const (
	metricType = "temperature"
	// How long calls and streams in flight get to finish once sending has stopped.
	drainTimeout = 10 * time.Second
	// How often progress is printed.
	progressEvery = 2 * time.Second
	// Longest sensor id the receiver accepts.
	maxSensorID = 128
)

type config struct {
	mode        string
	target      string
	concurrency int
	connections int
	duration    cli.Duration
	warmup      cli.Duration
	rate        float64
	sensors     int
	prefix      string
	batch       int
	streams     int
	window      int
	openRate    float64
	backoff     cli.Duration
	readingTime string
	clientTime  bool // resolved from readingTime: the client sets every reading's time
	caFile      string
	token       string
	username    string
	password    string
	tls         *tls.Config // from caFile: TLS to the target, trusting that CA
}

// result is the one JSON object printed on stdout.
type result struct {
	Mode                string            `json:"mode"`
	Target              string            `json:"target"`
	Seconds             float64           `json:"seconds"`
	Calls               uint64            `json:"calls"`
	CallsPerS           float64           `json:"calls_per_s"`
	ReadingsPerS        float64           `json:"readings_per_s"`
	LatencyMs           latencyMs         `json:"latency_ms"`
	Errors              map[string]uint64 `json:"errors"`
	StreamsOpen         int64             `json:"streams_open"`
	AckedReadingsTotal  uint64            `json:"acked_readings_total"`
	AckedBySensorPrefix string            `json:"acked_by_sensor_prefix"`
	SentTotal           uint64            `json:"sent_total"`
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet-load:", err)
		os.Exit(2)
	}
	res, okCalls, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet-load:", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-load:", err)
		os.Exit(1)
	}
	if okCalls == 0 {
		fmt.Fprintln(os.Stderr, "fleet-load: not a single call succeeded")
		os.Exit(2)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("fleet-load", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: fleet-load --mode unary|http|legacy|sync [flags]")
		fs.PrintDefaults()
	}
	cfg := config{}
	fs.StringVar(&cfg.mode, "mode", "", "unary (PushMetrics), http (POST /v1/metrics:push), legacy (POST /api/v1/sensors/{id}/measurements), sync (SyncMetrics streams) or mqtt (PUBLISH to the broker); required")
	fs.StringVar(&cfg.target, "target", "127.0.0.1:8080", "host:port of Envoy (or of a receiver, for unary and sync; of the MQTT broker for mqtt)")
	fs.IntVar(&cfg.concurrency, "concurrency", 64, "unary/http/legacy: concurrent workers, one call at a time each")
	fs.IntVar(&cfg.connections, "connections", 8, "unary/sync: gRPC connections to spread workers or streams over (sync: default max(8, ceil(streams/500)))")
	cfg.duration.Duration = 10 * time.Second
	fs.Var(&cfg.duration, "duration", "how long to measure, after the warmup (a duration such as 10s, or seconds)")
	fs.Var(&cfg.warmup, "warmup", "how long to send before measuring (sync: after every stream is open)")
	fs.Float64Var(&cfg.rate, "rate", 0, "readings/s over all workers or streams; 0 = as fast as possible (closed loop)")
	fs.IntVar(&cfg.sensors, "sensors", 0, "distinct sensor ids (default: --concurrency, or --streams in sync mode)")
	fs.StringVar(&cfg.prefix, "prefix", "fleet-", "sensor id prefix: the ids are PREFIX0 ... PREFIX<sensors-1>")
	fs.IntVar(&cfg.batch, "batch", 1, "readings per message, all of one sensor (legacy: 1)")
	fs.IntVar(&cfg.streams, "streams", 1000, "sync: concurrent SyncMetrics streams, one device (sensor) each; mqtt: devices, a connection each")
	fs.IntVar(&cfg.window, "window", 1, "sync: most unacknowledged batches per stream; mqtt: most messages awaiting their PUBACK per device")
	fs.Float64Var(&cfg.openRate, "open-rate", 2000, "sync, mqtt: most streams (connections) opened per second")
	cfg.backoff.Duration = 10 * time.Millisecond
	fs.Var(&cfg.backoff, "backoff", "unary/http/legacy: a worker's pause after a failed call")
	fs.StringVar(&cfg.readingTime, "reading-time", "auto", "client (each reading carries a time, strictly increasing per sensor), server (none: the receiver sets the arrival time) or auto (server when paced at <= 1 reading/s per sensor with --batch 1, else client)")
	fs.StringVar(&cfg.caFile, "ca", "", "TLS to --target, trusting the CA in this PEM file (e.g. .stack/tls/ca.pem for 127.0.0.1:8443)")
	fs.StringVar(&cfg.token, "token", "", "a bearer token sent with every call and stream (make token); needs --ca")
	fs.StringVar(&cfg.username, "username", "", "mqtt: the devices' username at the broker (make device-credentials)")
	fs.StringVar(&cfg.password, "password", "", "mqtt: its password")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() != 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if cfg.caFile != "" {
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return cfg, fmt.Errorf("--ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("--ca %s: no PEM certificate in it", cfg.caFile)
		}
		cfg.tls = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	} else if cfg.token != "" {
		return cfg, errors.New("--token needs --ca: a token goes over TLS only")
	}
	switch cfg.mode {
	case "unary", "http", "legacy", "sync", "mqtt":
	case "":
		return cfg, errors.New("--mode is required (unary, http, legacy, sync or mqtt)")
	default:
		return cfg, fmt.Errorf("--mode must be unary, http, legacy, sync or mqtt, got %q", cfg.mode)
	}
	if cfg.mode == "sync" && !set["connections"] {
		cfg.connections = max(8, (cfg.streams+499)/500)
	}
	if !set["sensors"] {
		cfg.sensors = cfg.concurrency
		if cfg.mode == "sync" || cfg.mode == "mqtt" {
			cfg.sensors = cfg.streams
		}
	}
	switch {
	case cfg.concurrency < 1:
		return cfg, errors.New("--concurrency must be at least 1")
	case cfg.connections < 1:
		return cfg, errors.New("--connections must be at least 1")
	case cfg.streams < 1:
		return cfg, errors.New("--streams must be at least 1")
	case cfg.window < 1:
		return cfg, errors.New("--window must be at least 1")
	case cfg.sensors < 1:
		return cfg, errors.New("--sensors must be at least 1")
	case cfg.batch < 1 || cfg.batch > 10_000:
		return cfg, errors.New("--batch must be 1 to 10000")
	case cfg.mode == "legacy" && cfg.batch != 1:
		return cfg, errors.New("--batch must be 1 in legacy mode (one reading per request)")
	case cfg.mode == "mqtt" && cfg.batch != 1:
		return cfg, errors.New("--batch must be 1 in mqtt mode (one reading per message)")
	case cfg.duration.Duration <= 0:
		return cfg, errors.New("--duration must be positive")
	case cfg.warmup.Duration < 0:
		return cfg, errors.New("--warmup must not be negative")
	case cfg.backoff.Duration < 0:
		return cfg, errors.New("--backoff must not be negative")
	case cfg.rate < 0 || math.IsNaN(cfg.rate) || math.IsInf(cfg.rate, 0):
		return cfg, errors.New("--rate must be a number >= 0")
	case !(cfg.openRate > 0) || math.IsInf(cfg.openRate, 0):
		return cfg, errors.New("--open-rate must be positive")
	}
	if _, _, err := net.SplitHostPort(cfg.target); err != nil {
		return cfg, fmt.Errorf("--target must be host:port: %w", err)
	}
	if err := checkPrefix(cfg.prefix, cfg.sensors); err != nil {
		return cfg, err
	}
	switch cfg.readingTime {
	case "client":
		cfg.clientTime = true
	case "server":
		if cfg.batch > 1 {
			return cfg, errors.New("--reading-time server needs --batch 1: the readings of a batch would share one time")
		}
	case "auto":
		cfg.clientTime = !(cfg.rate > 0 && cfg.batch == 1 && cfg.rate/float64(cfg.sensors) <= 1)
	default:
		return cfg, fmt.Errorf("--reading-time must be auto, client or server, got %q", cfg.readingTime)
	}
	return cfg, nil
}

// checkPrefix: sensor ids are 1 to 128 characters of A-Z, a-z, 0-9 and "._:-" (they go into JSON
// and URL paths unescaped).
func checkPrefix(prefix string, sensors int) error {
	for _, c := range prefix {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("--prefix %q: sensor ids may only hold A-Z, a-z, 0-9 and \"._:-\"", prefix)
		}
	}
	if len(prefix)+len(strconv.Itoa(sensors-1)) > maxSensorID {
		return fmt.Errorf("--prefix %q is too long: sensor ids are at most %d characters", prefix, maxSensorID)
	}
	return nil
}

// runner is what the workers and streams share.
type runner struct {
	cfg    config
	ids    []string  // sensor ids by index
	values []float64 // each sensor's reading value
	clock  sensorClock
	st     stats
	ctx    context.Context // cancelled to abandon calls in flight
	stop   chan struct{}   // closed when sending should end
	wg     sync.WaitGroup  // workers and streams
	base   time.Time       // the program's start (monotonic)
}

func (r *runner) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// sensorClock hands out reading times that are strictly increasing per sensor: the current time,
// or one unit (µs, or ms for the legacy route) after the sensor's last one if that is later, so no
// two readings of a sensor share (sensor, type, time) even when several are sent at once.
type sensorClock struct {
	last  []atomic.Int64
	milli bool
}

// next reserves n consecutive times of sensor i and returns the first.
func (c *sensorClock) next(i int, n int64) int64 {
	now := time.Now()
	t := now.UnixMicro()
	if c.milli {
		t = now.UnixMilli()
	}
	for {
		last := c.last[i].Load()
		first := max(t, last+1)
		if c.last[i].CompareAndSwap(last, first+n-1) {
			return first
		}
	}
}

func run(cfg config) (result, uint64, error) {
	r := &runner{cfg: cfg, stop: make(chan struct{}), base: time.Now()}
	ctx, abandon := context.WithCancel(context.Background())
	defer abandon()
	r.ctx = ctx
	r.ids = make([]string, cfg.sensors)
	r.values = make([]float64, cfg.sensors)
	for i := range r.ids {
		r.ids[i] = cfg.prefix + strconv.Itoa(i)
		r.values[i] = float64(20 + i%10)
	}
	// The legacy route and MQTT's compact JSON ("ts") take milliseconds.
	r.clock = sensorClock{last: make([]atomic.Int64, cfg.sensors), milli: cfg.mode == "legacy" || cfg.mode == "mqtt"}

	var conns []*grpc.ClientConn
	if cfg.mode == "unary" || cfg.mode == "sync" {
		for range cfg.connections {
			conn, err := grpc.NewClient(cfg.target, dialOptions(cfg)...)
			if err != nil {
				return result{}, 0, err
			}
			defer conn.Close()
			conn.Connect()
			conns = append(conns, conn)
		}
	}

	interrupted := make(chan struct{})
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		<-signals
		fmt.Fprintln(os.Stderr, "fleet-load: stopping (a second signal abandons the calls in flight)")
		close(interrupted)
		<-signals
		abandon()
	}()
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-interrupted:
			return false
		}
	}

	clientTime := "client"
	if !cfg.clientTime {
		clientTime = "server"
	}
	began := time.Now()
	switch cfg.mode {
	case "mqtt":
		fmt.Fprintf(os.Stderr, "fleet-load: mqtt to %s: %d devices, window %d, rate %s, %d sensors %q, reading time %s\n",
			cfg.target, cfg.streams, cfg.window, rateText(cfg.rate), cfg.sensors, cfg.prefix, clientTime)
	case "sync":
		fmt.Fprintf(os.Stderr, "fleet-load: sync to %s: %d streams over %d connections, window %d, rate %s, %d sensors %q, batch %d, reading time %s\n",
			cfg.target, cfg.streams, cfg.connections, cfg.window, rateText(cfg.rate), cfg.sensors, cfg.prefix, cfg.batch, clientTime)
	default:
		fmt.Fprintf(os.Stderr, "fleet-load: %s to %s: %d workers, rate %s, %d sensors %q, batch %d, reading time %s\n",
			cfg.mode, cfg.target, cfg.concurrency, rateText(cfg.rate), cfg.sensors, cfg.prefix, cfg.batch, clientTime)
	}

	var measureStart, measureEnd time.Time
	progressDone := make(chan struct{})
	go r.progress(began, progressDone)

	allOpen := make(chan struct{})
	switch cfg.mode {
	case "unary":
		r.startUnary(conns)
		close(allOpen)
	case "http", "legacy":
		if err := r.startHTTP(); err != nil {
			return result{}, 0, err
		}
		close(allOpen)
	case "sync":
		r.wg.Add(1) // the opener adds the devices: the group must not reach 0 before it is done
		go func() {
			defer r.wg.Done()
			r.openStreams(conns, allOpen)
		}()
	case "mqtt":
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.openMQTT(allOpen)
		}()
	}

	ran := true
	select {
	case <-allOpen:
	case <-interrupted:
		ran = false
	}
	if ran && (cfg.mode == "sync" || cfg.mode == "mqtt") {
		fmt.Fprintf(os.Stderr, "fleet-load: %d streams opened in %.1fs, %d open\n", cfg.streams, time.Since(began).Seconds(), r.st.open.Load())
	}
	if ran && cfg.warmup.Duration > 0 {
		ran = sleep(cfg.warmup.Duration)
	}
	var streamsOpen int64
	if ran {
		measureStart = time.Now()
		r.st.phase.Store(phaseMeasuring)
		sleep(cfg.duration.Duration)
		streamsOpen = r.st.open.Load()
		measureEnd = time.Now()
	}
	r.st.phase.Store(phaseDone)
	close(r.stop)

	// Let the calls in flight finish (their acknowledgements count), then abandon the rest.
	drained := make(chan struct{})
	go func() { r.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		fmt.Fprintf(os.Stderr, "fleet-load: calls still in flight after %s, abandoning them\n", drainTimeout)
		abandon()
		<-drained
	case <-ctx.Done():
		<-drained
	}
	close(progressDone)

	seconds := measureEnd.Sub(measureStart).Seconds()
	calls, latency := r.st.latency.summary()
	res := result{
		Mode:                cfg.mode,
		Target:              cfg.target,
		Seconds:             round(seconds, 3),
		Calls:               calls,
		LatencyMs:           latency,
		Errors:              r.st.errors(),
		StreamsOpen:         streamsOpen,
		AckedReadingsTotal:  r.st.ackedReadings.Load(),
		AckedBySensorPrefix: cfg.prefix,
		SentTotal:           r.st.sent.Load(),
	}
	if seconds > 0 {
		res.CallsPerS = round(float64(calls)/seconds, 1)
		res.ReadingsPerS = round(float64(r.st.measuredReadings.Load())/seconds, 1)
	}
	fmt.Fprintf(os.Stderr, "fleet-load: done in %.1fs: %d sent, %d OK, %d readings acknowledged, %d errors",
		time.Since(began).Seconds(), res.SentTotal, r.st.okCalls.Load(), res.AckedReadingsTotal, r.st.errorCount.Load())
	if cfg.mode == "sync" {
		fmt.Fprintf(os.Stderr, ", %d streams reopened", r.st.reopened.Load())
	}
	fmt.Fprintln(os.Stderr)
	return res, r.st.okCalls.Load(), nil
}

func rateText(rate float64) string {
	if rate == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(rate, 'g', -1, 64) + " readings/s"
}

// progress prints a line to stderr every 2 s until done is closed.
func (r *runner) progress(began time.Time, done <-chan struct{}) {
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	lastOK, lastAt := uint64(0), began
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			ok := r.st.okCalls.Load()
			phase := [...]string{"warmup", "measuring", "draining"}[r.st.phase.Load()]
			line := fmt.Sprintf("fleet-load: %5.1fs %-9s %8.1f OK calls/s, %d sent, %d errors",
				now.Sub(began).Seconds(), phase, float64(ok-lastOK)/now.Sub(lastAt).Seconds(), r.st.sent.Load(), r.st.errorCount.Load())
			if r.cfg.mode == "sync" || r.cfg.mode == "mqtt" {
				line += fmt.Sprintf(", %d streams open, %d reopened", r.st.open.Load(), r.st.reopened.Load())
			}
			fmt.Fprintln(os.Stderr, line)
			lastOK, lastAt = ok, now
		}
	}
}

// newStoppedTimer is a timer to Reset before each wait.
func newStoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// pause waits d, or until sending stops; false if it stopped.
func (r *runner) pause(t *time.Timer, d time.Duration) bool {
	if d <= 0 {
		return !r.stopping()
	}
	t.Reset(d)
	select {
	case <-t.C:
		return true
	case <-r.stop:
		t.Stop()
		return false
	}
}

// dialOptions: plaintext, or TLS with the --ca and the --token on every call.
func dialOptions(cfg config) []grpc.DialOption {
	if cfg.tls == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg.tls))}
	if cfg.token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer(cfg.token)))
	}
	return options
}

// bearer is a token sent as "authorization: Bearer <token>" with every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (b bearer) RequireTransportSecurity() bool { return true }
