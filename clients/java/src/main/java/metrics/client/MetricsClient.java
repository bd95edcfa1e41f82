package metrics.client;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import com.google.protobuf.util.Timestamps;
import com.metrics.v1.AssessorServiceGrpc;
import com.metrics.v1.GetLegacyEventsRequest;
import com.metrics.v1.GetLegacyEventsResponse;
import com.metrics.v1.GetLegacyMeasurementsRequest;
import com.metrics.v1.GetLegacyMeasurementsResponse;
import com.metrics.v1.Metric;
import com.metrics.v1.ReceiverServiceGrpc;
import com.metrics.v1.StreamMetricsRequest;
import com.metrics.v1.StreamMetricsResponse;
import com.metrics.v1.SyncMetricsRequest;
import com.metrics.v1.SyncMetricsResponse;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Supplier;

/**
 * Streams temperature readings of one sensor to the receiver through Envoy (native gRPC), reads the
 * sensor's data back from the assessor, and prints a JSON summary of both.
 *
 * <pre>java -jar target/metrics-client.jar [options] SENSOR_ID</pre>
 *
 * <p>The readings default to the original system's scenario (10, 100, 97, 99, 10, 100, 107, 98), one
 * second apart and ending now, each sent as its own batch. Storage is asynchronous (receiver → Kafka
 * → processor/saver → PostgreSQL), so the client polls the assessor until it reports what was sent.
 */
public final class MetricsClient {
  private static final String SCENARIO = "10,100,97,99,10,100,107,98";
  private static final String USAGE =
      String.join(
          "\n",
          "usage: metrics-client [options] SENSOR_ID",
          "  --target HOST:PORT     Envoy's address, native gRPC (default 127.0.0.1:8080)",
          "  --rpc sync|stream      SyncMetrics (acknowledged per batch, default) or StreamMetrics",
          "  --metric-type TYPE     metric type of the readings (default temperature)",
          "  --values V,V,...       reading values, one batch each (default " + SCENARIO + ")",
          "  --events N             wait until the assessor reports at least N events (default 0)",
          "  --timeout SECONDS      give up waiting for the assessor after this long (default 30)");
  private static final Duration CALL_TIMEOUT = Duration.ofSeconds(5);
  private static final JsonFormat.Printer JSON = JsonFormat.printer().omittingInsignificantWhitespace();

  /** The command line. */
  record Config(
      String target,
      String rpc,
      String metricType,
      double[] values,
      int minEvents,
      Duration timeout,
      String sensorId) {

    static Config parse(String[] args) {
      Map<String, String> options = new LinkedHashMap<>();
      options.put("--target", "127.0.0.1:8080");
      options.put("--rpc", "sync");
      options.put("--metric-type", "temperature");
      options.put("--values", SCENARIO);
      options.put("--events", "0");
      options.put("--timeout", "30");
      List<String> positionals = new ArrayList<>();
      for (int i = 0; i < args.length; i++) {
        String arg = args[i];
        if (arg.startsWith("--")) {
          String name = arg.contains("=") ? arg.substring(0, arg.indexOf('=')) : arg;
          if (!options.containsKey(name)) {
            throw new IllegalArgumentException("unknown option " + name);
          }
          String value;
          if (arg.contains("=")) {
            value = arg.substring(arg.indexOf('=') + 1);
          } else if (i + 1 < args.length) {
            value = args[++i];
          } else {
            throw new IllegalArgumentException(name + " needs a value");
          }
          options.put(name, value);
        } else {
          positionals.add(arg);
        }
      }
      if (positionals.size() != 1) {
        throw new IllegalArgumentException("expected exactly one SENSOR_ID");
      }
      String rpc = options.get("--rpc");
      if (!rpc.equals("sync") && !rpc.equals("stream")) {
        throw new IllegalArgumentException("--rpc must be sync or stream, got " + rpc);
      }
      double[] values;
      try {
        values =
            Arrays.stream(options.get("--values").split(","))
                .mapToDouble(v -> Double.parseDouble(v.trim()))
                .toArray();
        return new Config(
            options.get("--target"),
            rpc,
            options.get("--metric-type"),
            values,
            Integer.parseInt(options.get("--events")),
            Duration.ofMillis(Math.round(Double.parseDouble(options.get("--timeout")) * 1000)),
            positionals.get(0));
      } catch (NumberFormatException e) {
        throw new IllegalArgumentException("not a number: " + e.getMessage(), e);
      }
    }
  }

  /** The outcome of a run: the summary to print and whether the assessor reported everything. */
  record Outcome(JsonObject summary, boolean complete) {}

  public static void main(String[] args) throws InterruptedException {
    Config config;
    try {
      config = Config.parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println("metrics-client: " + e.getMessage() + "\n" + USAGE);
      System.exit(2);
      return;
    }
    ManagedChannel channel =
        Grpc.newChannelBuilder(config.target(), InsecureChannelCredentials.create()).build();
    int exit;
    try {
      Outcome outcome = new MetricsClient(channel).run(config);
      System.out.println(new GsonBuilder().setPrettyPrinting().create().toJson(outcome.summary()));
      exit = outcome.complete() ? 0 : 3;
      if (!outcome.complete()) {
        System.err.println(
            "metrics-client: the assessor did not report everything within " + config.timeout());
      }
    } catch (RpcFailed e) {
      System.err.println("metrics-client: " + e.getMessage());
      exit = 1;
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(exit);
  }

  /** A call failed; the message names it and its status. */
  static final class RpcFailed extends Exception {
    private static final long serialVersionUID = 1L;

    RpcFailed(String rpc, Throwable cause) {
      super(rpc + ": " + describe(Status.fromThrowable(cause)), cause);
    }

    /** A status as "CODE: description", e.g. "INVALID_ARGUMENT: metrics[0]...". */
    static String describe(Status status) {
      return status.getCode() + ": " + status.getDescription();
    }

    RpcFailed(String message) {
      super(message);
    }
  }

  private final ReceiverServiceGrpc.ReceiverServiceStub receiver;
  private final AssessorServiceGrpc.AssessorServiceBlockingStub assessor;

  MetricsClient(ManagedChannel channel) {
    this.receiver = ReceiverServiceGrpc.newStub(channel);
    this.assessor = AssessorServiceGrpc.newBlockingStub(channel);
  }

  Outcome run(Config config) throws RpcFailed, InterruptedException {
    long started = System.nanoTime();
    List<Metric> metrics = readings(config);
    String rpc;
    List<Message> responses;
    if (config.rpc().equals("sync")) {
      rpc = "/" + ReceiverServiceGrpc.getSyncMetricsMethod().getFullMethodName();
      responses = sendSync(metrics, config.timeout());
    } else {
      rpc = "/" + ReceiverServiceGrpc.getStreamMetricsMethod().getFullMethodName();
      responses = sendStream(metrics, config.timeout());
    }
    ReadBack read = readBack(config, metrics);

    JsonObject sent = new JsonObject();
    sent.add("metrics", jsonArray(metrics));
    sent.add("responses", jsonArray(responses));
    JsonObject summary = new JsonObject();
    summary.addProperty("language", "java");
    summary.addProperty("target", config.target());
    summary.addProperty("sensorId", config.sensorId());
    summary.addProperty("rpc", rpc);
    summary.add("sent", sent);
    summary.add("read", read.answers());
    summary.addProperty("complete", read.complete());
    summary.addProperty("elapsedMs", (System.nanoTime() - started) / 1_000_000);
    return new Outcome(summary, read.complete());
  }

  /** The values, one second apart, the last one now. */
  static List<Metric> readings(Config config) {
    Instant last = Instant.ofEpochMilli(System.currentTimeMillis());
    List<Metric> metrics = new ArrayList<>();
    double[] values = config.values();
    for (int i = 0; i < values.length; i++) {
      Instant at = last.minusSeconds(values.length - 1 - i);
      metrics.add(
          Metric.newBuilder()
              .setSensorId(config.sensorId())
              .setMetricType(config.metricType())
              .setValue(values[i])
              .setReadingTime(Timestamps.fromMillis(at.toEpochMilli()))
              .build());
    }
    return metrics;
  }

  /**
   * Sends one batch per reading on a SyncMetrics stream; the acknowledgements arrive in order, one
   * per batch.
   */
  List<Message> sendSync(List<Metric> metrics, Duration timeout)
      throws RpcFailed, InterruptedException {
    String rpc = "/" + ReceiverServiceGrpc.getSyncMetricsMethod().getFullMethodName();
    Collector<SyncMetricsResponse> acks = new Collector<>();
    StreamObserver<SyncMetricsRequest> requests =
        receiver.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS).syncMetrics(acks);
    for (int i = 0; i < metrics.size(); i++) {
      requests.onNext(
          SyncMetricsRequest.newBuilder().setSequence(i + 1).addMetrics(metrics.get(i)).build());
    }
    requests.onCompleted();
    List<SyncMetricsResponse> received = acks.await(rpc, timeout);
    for (SyncMetricsResponse ack : received) {
      if (ack.getStatus().getCode() != Status.Code.OK.value()) {
        throw new RpcFailed(
            String.format(
                "%s: batch %d not written: %s",
                rpc,
                ack.getSequence(),
                RpcFailed.describe(
                    Status.fromCodeValue(ack.getStatus().getCode())
                        .withDescription(ack.getStatus().getMessage()))));
      }
    }
    if (received.size() != metrics.size()) {
      throw new RpcFailed(
          String.format(
              "%s: %d acknowledgements for %d batches", rpc, received.size(), metrics.size()));
    }
    return List.copyOf(received);
  }

  /**
   * Sends one batch per reading on a StreamMetrics client stream; the one answer comes after every
   * batch is durably in Kafka.
   */
  List<Message> sendStream(List<Metric> metrics, Duration timeout)
      throws RpcFailed, InterruptedException {
    Collector<StreamMetricsResponse> reply = new Collector<>();
    StreamObserver<StreamMetricsRequest> requests =
        receiver.withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS).streamMetrics(reply);
    for (Metric metric : metrics) {
      requests.onNext(StreamMetricsRequest.newBuilder().addMetrics(metric).build());
    }
    requests.onCompleted();
    return List.copyOf(
        reply.await("/" + ReceiverServiceGrpc.getStreamMetricsMethod().getFullMethodName(), timeout));
  }

  /** Collects what a call answers until it ends. */
  static final class Collector<T> implements StreamObserver<T> {
    private final List<T> received = new ArrayList<>();
    private final CompletableFuture<List<T>> done = new CompletableFuture<>();

    @Override
    public synchronized void onNext(T value) {
      received.add(value);
    }

    @Override
    public synchronized void onError(Throwable error) {
      done.completeExceptionally(error);
    }

    @Override
    public synchronized void onCompleted() {
      done.complete(List.copyOf(received));
    }

    List<T> await(String rpc, Duration timeout) throws RpcFailed, InterruptedException {
      try {
        return done.get(timeout.toMillis() + 1000, TimeUnit.MILLISECONDS);
      } catch (ExecutionException e) {
        throw new RpcFailed(rpc, e.getCause());
      } catch (TimeoutException e) {
        throw new RpcFailed(rpc, Status.DEADLINE_EXCEEDED.asException());
      }
    }
  }

  /** What the assessor answered, by name, and whether it reported everything that was sent. */
  record ReadBack(JsonObject answers, boolean complete) {}

  /** One read from the assessor: its answer goes into the summary under name; rpc names it in errors. */
  record Query(String name, String rpc, Supplier<Message> call) {}

  /**
   * The reads of the sensor's data from the assessor. Another query (e.g. getSensorStats over the
   * readings' time range, once the assessor implements it) is one more entry.
   */
  List<Query> queries(String sensorId) {
    return List.of(
        new Query(
            "events",
            "/" + AssessorServiceGrpc.getGetLegacyEventsMethod().getFullMethodName(),
            () ->
                deadline()
                    .getLegacyEvents(
                        GetLegacyEventsRequest.newBuilder().setSensorUuid(sensorId).build())),
        new Query(
            "measurements",
            "/" + AssessorServiceGrpc.getGetLegacyMeasurementsMethod().getFullMethodName(),
            () ->
                deadline()
                    .getLegacyMeasurements(
                        GetLegacyMeasurementsRequest.newBuilder().setSensorUuid(sensorId).build())));
  }

  private AssessorServiceGrpc.AssessorServiceBlockingStub deadline() {
    return assessor.withDeadlineAfter(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
  }

  /**
   * Polls the assessor until it reports every sent reading (the last hour's mean and the maximum
   * match what was sent) and at least config.minEvents events, or until config.timeout. An
   * unavailable assessor (e.g. restarting) is polled again until then.
   */
  ReadBack readBack(Config config, List<Metric> metrics) throws RpcFailed, InterruptedException {
    double mean = metrics.stream().mapToDouble(Metric::getValue).average().orElse(Double.NaN);
    double max = metrics.stream().mapToDouble(Metric::getValue).max().orElse(Double.NaN);
    long deadline = System.nanoTime() + config.timeout().toNanos();
    while (true) {
      Map<String, Message> answers;
      try {
        answers = readOnce(config.sensorId());
      } catch (RpcFailed e) {
        if (Status.fromThrowable(e.getCause()).getCode() != Status.Code.UNAVAILABLE
            || System.nanoTime() > deadline) {
          throw e;
        }
        Thread.sleep(200);
        continue;
      }
      GetLegacyEventsResponse events = (GetLegacyEventsResponse) answers.get("events");
      GetLegacyMeasurementsResponse measurements =
          (GetLegacyMeasurementsResponse) answers.get("measurements");
      // The legacy measurements know only temperature, as the original system did.
      boolean stored =
          !config.metricType().equals("temperature")
              || (measurements.hasAverageLastHour()
                  && closeTo(measurements.getAverageLastHour(), mean)
                  && measurements.hasMaxLast30Days()
                  && measurements.getMaxLast30Days() == max);
      boolean complete = stored && events.getEventsCount() >= config.minEvents();
      if (complete || System.nanoTime() > deadline) {
        JsonObject json = new JsonObject();
        answers.forEach((name, answer) -> json.add(name, json(answer)));
        return new ReadBack(json, complete);
      }
      Thread.sleep(200);
    }
  }

  /** Runs every query once: the answers by name. */
  Map<String, Message> readOnce(String sensorId) throws RpcFailed {
    Map<String, Message> answers = new LinkedHashMap<>();
    for (Query query : queries(sensorId)) {
      try {
        answers.put(query.name(), query.call().get());
      } catch (StatusRuntimeException e) {
        throw new RpcFailed(query.rpc(), e);
      }
    }
    return answers;
  }

  private static boolean closeTo(double a, double b) {
    return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  }

  /** The protobuf JSON mapping of a message (lowerCamelCase names, RFC 3339 times, 64-bit integers as strings). */
  static JsonElement json(Message message) {
    try {
      return JsonParser.parseString(JSON.print(message));
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalStateException(e);
    }
  }

  static JsonArray jsonArray(List<? extends Message> messages) {
    JsonArray array = new JsonArray();
    messages.forEach(m -> array.add(json(m)));
    return array;
  }
}
