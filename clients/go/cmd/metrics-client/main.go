// Command metrics-client streams temperature readings of one sensor to the receiver through Envoy
// (native gRPC), reads the sensor's data back from the assessor, and prints a JSON summary of both.
//
//	metrics-client [flags] SENSOR_ID
//
// The readings default to the original system's scenario (10, 100, 97, 99, 10, 100, 107, 98), one
// second apart and ending now, each sent as its own batch. Storage is asynchronous (receiver → Kafka →
// processor/saver → PostgreSQL), so the client polls the assessor until it reports what was sent.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metricsv1 "metrics/clients/go/gen/metrics/v1"
	"metrics/clients/go/internal/cli"
)

const scenario = "10,100,97,99,10,100,107,98"

type config struct {
	target     string
	rpc        string
	metricType string
	values     []float64
	minEvents  int
	timeout    cli.Duration
	sensorID   string
}

// summary is what the client prints: everything as the protobuf JSON mapping of the messages.
type summary struct {
	Language  string                     `json:"language"`
	Target    string                     `json:"target"`
	SensorID  string                     `json:"sensorId"`
	RPC       string                     `json:"rpc"`
	Sent      sent                       `json:"sent"`
	Read      map[string]json.RawMessage `json:"read"`
	Complete  bool                       `json:"complete"`
	ElapsedMs int64                      `json:"elapsedMs"`
}

type sent struct {
	Metrics   []json.RawMessage `json:"metrics"`
	Responses []json.RawMessage `json:"responses"`
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "metrics-client:", err)
		os.Exit(2)
	}
	complete, err := run(cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metrics-client:", err)
		os.Exit(1)
	}
	if !complete {
		fmt.Fprintf(os.Stderr, "metrics-client: the assessor did not report everything within %s\n", cfg.timeout)
		os.Exit(3)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("metrics-client", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: metrics-client [flags] SENSOR_ID")
		fs.PrintDefaults()
	}
	cfg := config{}
	fs.StringVar(&cfg.target, "target", "127.0.0.1:8080", "Envoy's address (host:port), native gRPC")
	fs.StringVar(&cfg.rpc, "rpc", "sync", "how to send: sync (SyncMetrics, acknowledged per batch) or stream (StreamMetrics)")
	fs.StringVar(&cfg.metricType, "metric-type", "temperature", "metric type of the readings")
	values := fs.String("values", scenario, "comma-separated reading values, one batch each")
	fs.IntVar(&cfg.minEvents, "events", 0, "wait until the assessor reports at least this many events")
	cfg.timeout.Duration = 30 * time.Second
	fs.Var(&cfg.timeout, "timeout", "give up waiting for the assessor after this many `seconds`")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return cfg, errors.New("expected exactly one SENSOR_ID")
	}
	cfg.sensorID = fs.Arg(0)
	if cfg.rpc != "sync" && cfg.rpc != "stream" {
		return cfg, fmt.Errorf("-rpc must be sync or stream, got %q", cfg.rpc)
	}
	for _, field := range strings.Split(*values, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(field), 64)
		if err != nil {
			return cfg, fmt.Errorf("-values: %w", err)
		}
		cfg.values = append(cfg.values, v)
	}
	return cfg, nil
}

func run(cfg config, out io.Writer) (bool, error) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout.Duration+10*time.Second)
	defer cancel()

	conn, err := grpc.NewClient(cfg.target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	receiver := metricsv1.NewReceiverServiceClient(conn)
	assessor := metricsv1.NewAssessorServiceClient(conn)

	metrics := readings(cfg)
	var responses []proto.Message
	var rpc string
	if cfg.rpc == "sync" {
		rpc = metricsv1.ReceiverService_SyncMetrics_FullMethodName
		responses, err = sendSync(ctx, receiver, metrics)
	} else {
		rpc = metricsv1.ReceiverService_StreamMetrics_FullMethodName
		responses, err = sendStream(ctx, receiver, metrics)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %s", rpc, describe(err))
	}

	read, complete, err := readBack(ctx, assessor, cfg, metrics)
	if err != nil {
		return false, err
	}

	s := summary{
		Language:  "go",
		Target:    cfg.target,
		SensorID:  cfg.sensorID,
		RPC:       rpc,
		Read:      read,
		Complete:  complete,
		ElapsedMs: time.Since(started).Milliseconds(),
	}
	for _, m := range metrics {
		s.Sent.Metrics = append(s.Sent.Metrics, toJSON(m))
	}
	for _, r := range responses {
		s.Sent.Responses = append(s.Sent.Responses, toJSON(r))
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return complete, enc.Encode(s)
}

// readings are the values, one second apart, the last one now (to the millisecond).
func readings(cfg config) []*metricsv1.Metric {
	last := time.Now().Truncate(time.Millisecond)
	metrics := make([]*metricsv1.Metric, len(cfg.values))
	for i, v := range cfg.values {
		at := last.Add(-time.Duration(len(cfg.values)-1-i) * time.Second)
		metrics[i] = &metricsv1.Metric{
			SensorId:    cfg.sensorID,
			MetricType:  cfg.metricType,
			Value:       v,
			ReadingTime: timestamppb.New(at),
		}
	}
	return metrics
}

// sendSync sends one batch per reading on a SyncMetrics stream and returns the acknowledgements,
// which arrive in order, one per batch.
func sendSync(ctx context.Context, receiver metricsv1.ReceiverServiceClient, metrics []*metricsv1.Metric) ([]proto.Message, error) {
	stream, err := receiver.SyncMetrics(ctx)
	if err != nil {
		return nil, err
	}
	sendErr := make(chan error, 1)
	go func() {
		defer close(sendErr)
		for i, m := range metrics {
			req := &metricsv1.SyncMetricsRequest{Sequence: int64(i + 1), Metrics: []*metricsv1.Metric{m}}
			if err := stream.Send(req); err != nil {
				// The real error comes from Recv.
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	var acks []proto.Message
	for {
		ack, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if c := ack.GetStatus().GetCode(); c != int32(codes.OK) {
			return nil, fmt.Errorf("batch %d not written: %s: %s", ack.GetSequence(), code.Code(c), ack.GetStatus().GetMessage())
		}
		acks = append(acks, ack)
	}
	if err := <-sendErr; err != nil {
		return nil, err
	}
	if len(acks) != len(metrics) {
		return nil, fmt.Errorf("%d acknowledgements for %d batches", len(acks), len(metrics))
	}
	return acks, nil
}

// sendStream sends one batch per reading on a StreamMetrics client stream; the one answer comes
// after every batch is durably in Kafka.
func sendStream(ctx context.Context, receiver metricsv1.ReceiverServiceClient, metrics []*metricsv1.Metric) ([]proto.Message, error) {
	stream, err := receiver.StreamMetrics(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range metrics {
		if err := stream.Send(&metricsv1.StreamMetricsRequest{Metrics: []*metricsv1.Metric{m}}); err != nil {
			break // the real error comes from CloseAndRecv
		}
	}
	reply, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return []proto.Message{reply}, nil
}

// query is one read of the sensor's data from the assessor; its answer goes into the summary
// under its name. Another query (e.g. GetSensorStats over the readings' time range, once the
// assessor implements it) is one more entry in queries.
type query struct {
	name string // in the summary
	rpc  string // in errors
	call func(context.Context) (proto.Message, error)
}

func queries(assessor metricsv1.AssessorServiceClient, sensorID string) []query {
	return []query{
		{"events", metricsv1.AssessorService_GetLegacyEvents_FullMethodName, func(ctx context.Context) (proto.Message, error) {
			return assessor.GetLegacyEvents(ctx, &metricsv1.GetLegacyEventsRequest{SensorUuid: sensorID})
		}},
		{"measurements", metricsv1.AssessorService_GetLegacyMeasurements_FullMethodName, func(ctx context.Context) (proto.Message, error) {
			return assessor.GetLegacyMeasurements(ctx, &metricsv1.GetLegacyMeasurementsRequest{SensorUuid: sensorID})
		}},
	}
}

// readBack polls the assessor until it reports every sent reading (the last hour's mean and the
// maximum match what was sent) and at least cfg.minEvents events, or until cfg.timeout. An
// unavailable assessor (e.g. restarting) is polled again until then.
func readBack(ctx context.Context, assessor metricsv1.AssessorServiceClient, cfg config, metrics []*metricsv1.Metric) (map[string]json.RawMessage, bool, error) {
	wantMean, wantMax := meanMax(metrics)
	deadline := time.Now().Add(cfg.timeout.Duration)
	for {
		answers, rpc, err := readOnce(ctx, assessor, cfg.sensorID)
		if err != nil && (status.Code(err) != codes.Unavailable || time.Now().After(deadline)) {
			return nil, false, fmt.Errorf("%s: %s", rpc, describe(err))
		}
		if err == nil {
			events := answers["events"].(*metricsv1.GetLegacyEventsResponse)
			measurements := answers["measurements"].(*metricsv1.GetLegacyMeasurementsResponse)
			// The legacy measurements know only temperature, as the original system did.
			stored := cfg.metricType != "temperature" ||
				(measurements.AverageLastHour != nil && closeTo(measurements.GetAverageLastHour(), wantMean) &&
					measurements.MaxLast_30Days != nil && measurements.GetMaxLast_30Days() == wantMax)
			complete := stored && len(events.GetEvents()) >= cfg.minEvents
			if complete || time.Now().After(deadline) {
				read := map[string]json.RawMessage{}
				for name, answer := range answers {
					read[name] = toJSON(answer)
				}
				return read, complete, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readOnce runs every query once: the answers by name, or the failed call's method and error.
func readOnce(ctx context.Context, assessor metricsv1.AssessorServiceClient, sensorID string) (map[string]proto.Message, string, error) {
	answers := map[string]proto.Message{}
	for _, q := range queries(assessor, sensorID) {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		answer, err := q.call(callCtx)
		cancel()
		if err != nil {
			return nil, q.rpc, err
		}
		answers[q.name] = answer
	}
	return answers, "", nil
}

// describe is a failed call's status as "CODE: message", e.g. "INVALID_ARGUMENT: metrics[0]…",
// and any other error as its text.
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", code.Code(s.Code()), s.Message())
	}
	return err.Error()
}

func meanMax(metrics []*metricsv1.Metric) (float64, float64) {
	sum, hi := 0.0, math.Inf(-1)
	for _, m := range metrics {
		sum += m.GetValue()
		hi = math.Max(hi, m.GetValue())
	}
	return sum / float64(len(metrics)), hi
}

func closeTo(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b))
}

// toJSON is the protobuf JSON mapping of m (lowerCamelCase names, RFC 3339 times, 64-bit integers
// as strings), compacted: protojson's own spacing is deliberately unstable.
func toJSON(m proto.Message) json.RawMessage {
	raw, err := protojson.Marshal(m)
	if err != nil {
		panic(err) // only for invalid UTF-8 or out-of-range times, which the client never builds
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		panic(err)
	}
	return compact.Bytes()
}
