// Command events-consumer reads the Kafka topic "events" and prints one sensor's events as JSON,
// decoding the protobuf metrics.v1.Event values with the code generated from protos/ alone.
//
//	events-consumer [flags] SENSOR_ID
//
// A record of the topic is: key = the sensor id (UTF-8), value = metrics.v1.Event (protobuf binary),
// header "message-type" = "metrics.v1.Event". The consumer reads every partition from the first
// record at or after -since ago up to the end the topic had when it started (and on, while fewer than
// -events events of the sensor were seen), keeps the records whose key is the sensor id and drops
// duplicate events by event_id, as docs/api.md (Kafka topics) asks consumers to. It commits nothing (no group).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	metricsv1 "metrics/clients/go/gen/metrics/v1"
	"metrics/clients/go/internal/cli"
)

const messageType = "metrics.v1.Event"

type config struct {
	brokers []string
	// SASL/SCRAM-SHA-512 login, when a user is given (the local stack's Kafka takes nothing else).
	user         string
	passwordFile string
	topic        string
	since        cli.Duration
	minEvents    int
	timeout      cli.Duration
	sensorID     string
}

type summary struct {
	SensorID          string            `json:"sensorId"`
	Topic             string            `json:"topic"`
	Events            []json.RawMessage `json:"events"`
	Records           int               `json:"records"`
	DuplicatesDropped int               `json:"duplicatesDropped"`
	Skipped           int               `json:"skipped"`
	Complete          bool              `json:"complete"`
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "events-consumer:", err)
		os.Exit(2)
	}
	complete, err := run(cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "events-consumer:", err)
		os.Exit(1)
	}
	if !complete {
		fmt.Fprintf(os.Stderr, "events-consumer: fewer than %d events within %s\n", cfg.minEvents, cfg.timeout)
		os.Exit(3)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("events-consumer", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: events-consumer [flags] SENSOR_ID")
		fs.PrintDefaults()
	}
	cfg := config{}
	brokers := fs.String("brokers", "127.0.0.1:59092", "Kafka bootstrap servers, comma-separated")
	fs.StringVar(&cfg.topic, "topic", "events", "the events topic")
	fs.StringVar(&cfg.user, "user", "", "log in to Kafka as this user (SASL/SCRAM-SHA-512)")
	fs.StringVar(&cfg.passwordFile, "password-file", "", "the file holding the user's password (not a flag: ps shows flags)")
	cfg.since.Duration = time.Hour
	fs.Var(&cfg.since, "since", "read the records written in the last `seconds` (or a duration such as 10m); 0 reads the whole topic")
	fs.IntVar(&cfg.minEvents, "events", 0, "keep reading past the end until at least this many events of the sensor were seen")
	cfg.timeout.Duration = 30 * time.Second
	fs.Var(&cfg.timeout, "timeout", "give up after this many `seconds`")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return cfg, errors.New("expected exactly one SENSOR_ID")
	}
	cfg.sensorID = fs.Arg(0)
	cfg.brokers = strings.Split(*brokers, ",")
	return cfg, nil
}

func run(cfg config, out io.Writer) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout.Duration)
	defer cancel()

	start, end, err := offsets(ctx, cfg)
	if err != nil {
		return false, err
	}
	partitions := map[int32]kgo.Offset{}
	remaining := map[int32]int64{} // partition → end offset still to reach
	for p, from := range start {
		partitions[p] = kgo.NewOffset().At(from)
		if end[p] > from {
			remaining[p] = end[p]
		}
	}
	login, err := loginOptions(cfg)
	if err != nil {
		return false, err
	}
	client, err := kgo.NewClient(append(login,
		kgo.SeedBrokers(cfg.brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.topic: partitions}),
	)...)
	if err != nil {
		return false, err
	}
	defer client.Close()

	s := summary{SensorID: cfg.sensorID, Topic: cfg.topic, Events: []json.RawMessage{}}
	seen := map[string]bool{}
	for len(remaining) > 0 || len(s.Events) < cfg.minEvents {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			break // timed out: print what was read
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return false, fmt.Errorf("fetching %s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= remaining[r.Partition] {
				delete(remaining, r.Partition)
			}
			if string(r.Key) != cfg.sensorID {
				return
			}
			s.Records++
			event, err := decode(r)
			if err != nil {
				fmt.Fprintf(os.Stderr, "events-consumer: skipping %s[%d]@%d: %v\n", r.Topic, r.Partition, r.Offset, err)
				s.Skipped++
				return
			}
			if seen[event.GetEventId()] {
				s.DuplicatesDropped++
				return
			}
			seen[event.GetEventId()] = true
			s.Events = append(s.Events, toJSON(event))
		})
	}
	s.Complete = len(remaining) == 0 && len(s.Events) >= cfg.minEvents
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return s.Complete, enc.Encode(s)
}

// loginOptions are the client options that log in as cfg.user, if one is given.
func loginOptions(cfg config) ([]kgo.Opt, error) {
	if cfg.user == "" {
		return nil, nil
	}
	password, err := os.ReadFile(cfg.passwordFile)
	if err != nil {
		return nil, fmt.Errorf("--password-file: %w", err)
	}
	auth := scram.Auth{User: cfg.user, Pass: strings.TrimSuffix(string(password), "\n")}
	return []kgo.Opt{kgo.SASL(auth.AsSha512Mechanism())}, nil
}

// offsets are, per partition of the topic, the first offset to read and the end offset (high
// watermark) when the consumer started.
func offsets(ctx context.Context, cfg config) (map[int32]int64, map[int32]int64, error) {
	login, err := loginOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	client, err := kgo.NewClient(append(login, kgo.SeedBrokers(cfg.brokers...))...)
	if err != nil {
		return nil, nil, err
	}
	defer client.Close()
	admin := kadm.NewClient(client)

	var listed kadm.ListedOffsets
	if cfg.since.Duration > 0 {
		listed, err = admin.ListOffsetsAfterMilli(ctx, time.Now().Add(-cfg.since.Duration).UnixMilli(), cfg.topic)
	} else {
		listed, err = admin.ListStartOffsets(ctx, cfg.topic)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listing offsets of %s: %w", cfg.topic, err)
	}
	ends, err := admin.ListEndOffsets(ctx, cfg.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listing end offsets of %s: %w", cfg.topic, err)
	}
	start, end := map[int32]int64{}, map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { start[o.Partition] = o.Offset })
	ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	if len(start) == 0 {
		return nil, nil, fmt.Errorf("topic %s has no partitions", cfg.topic)
	}
	return start, end, nil
}

// decode checks the record's message-type header and decodes its value.
func decode(r *kgo.Record) (*metricsv1.Event, error) {
	for _, h := range r.Headers {
		if h.Key == "message-type" && string(h.Value) != messageType {
			return nil, fmt.Errorf("message-type is %q, not %q", h.Value, messageType)
		}
	}
	event := &metricsv1.Event{}
	if err := proto.Unmarshal(r.Value, event); err != nil {
		return nil, err
	}
	return event, nil
}

// toJSON is the protobuf JSON mapping of m, compacted (protojson's spacing is deliberately unstable).
func toJSON(m proto.Message) json.RawMessage {
	raw, err := protojson.Marshal(m)
	if err != nil {
		panic(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		panic(err)
	}
	return compact.Bytes()
}
