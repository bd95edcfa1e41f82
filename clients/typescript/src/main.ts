// metrics-client: streams temperature readings of one sensor to the receiver through Envoy (native
// gRPC over HTTP/2 cleartext, Connect's gRPC transport for Node), reads the sensor's data back from
// the assessor, and prints a JSON summary of both.
//
//   node dist/main.js [options] SENSOR_ID
//
// The readings default to the original system's scenario (10, 100, 97, 99, 10, 100, 107, 98), one
// second apart and ending now, each sent as its own batch. Storage is asynchronous (receiver → Kafka →
// processor/saver → PostgreSQL), so the client polls the assessor until it reports what was sent.

import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

import { create, toJson, type DescMessage, type DescMethod, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import {
  AssessorService,
  GetLegacyEventsResponseSchema,
  GetLegacyMeasurementsResponseSchema,
} from "./gen/metrics/v1/assessor_service_pb.js";
import { MetricSchema, type Metric } from "./gen/metrics/v1/metric_pb.js";
import {
  ReceiverService,
  StreamMetricsRequestSchema,
  StreamMetricsResponseSchema,
  SyncMetricsRequestSchema,
  SyncMetricsResponseSchema,
} from "./gen/metrics/v1/receiver_service_pb.js";

const SCENARIO = "10,100,97,99,10,100,107,98";
const USAGE = `usage: metrics-client [options] SENSOR_ID
  --target HOST:PORT     Envoy's address, native gRPC (default 127.0.0.1:8080)
  --rpc sync|stream      SyncMetrics (acknowledged per batch, default) or StreamMetrics
  --metric-type TYPE     metric type of the readings (default temperature)
  --values V,V,...       reading values, one batch each (default ${SCENARIO})
  --events N             wait until the assessor reports at least N events (default 0)
  --timeout SECONDS      give up waiting for the assessor after this long (default 30)`;

interface Config {
  target: string;
  rpc: "sync" | "stream";
  metricType: string;
  values: number[];
  minEvents: number;
  timeoutMs: number;
  sensorId: string;
}

function parseConfig(argv: string[]): Config {
  const { values: opts, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      target: { type: "string", default: "127.0.0.1:8080" },
      rpc: { type: "string", default: "sync" },
      "metric-type": { type: "string", default: "temperature" },
      values: { type: "string", default: SCENARIO },
      events: { type: "string", default: "0" },
      timeout: { type: "string", default: "30" },
    },
  });
  if (positionals.length !== 1) throw new Error("expected exactly one SENSOR_ID");
  if (opts.rpc !== "sync" && opts.rpc !== "stream") {
    throw new Error(`--rpc must be sync or stream, got ${JSON.stringify(opts.rpc)}`);
  }
  const number = (name: string, text: string): number => {
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value)) throw new Error(`${name}: not a number: ${text}`);
    return value;
  };
  return {
    target: opts.target,
    rpc: opts.rpc,
    metricType: opts["metric-type"],
    values: opts.values.split(",").map((v) => number("--values", v)),
    minEvents: number("--events", opts.events),
    timeoutMs: number("--timeout", opts.timeout) * 1000,
    sensorId: positionals[0]!,
  };
}

/** The canonical name of a gRPC status code, e.g. INVALID_ARGUMENT. */
function codeName(code: number): string {
  const name = code === 0 ? "OK" : Code[code as Code];
  return name === undefined ? `code ${code}` : name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The protobuf JSON mapping of a message (lowerCamelCase names, RFC 3339 times, 64-bit integers as strings). */
function json<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): JsonValue {
  return toJson(schema, message);
}

/** The values, one second apart, the last one now. */
function readings(config: Config): Metric[] {
  const last = Date.now();
  return config.values.map((value, i) =>
    create(MetricSchema, {
      sensorId: config.sensorId,
      metricType: config.metricType,
      value,
      readingTime: timestampFromMs(last - (config.values.length - 1 - i) * 1000),
    }),
  );
}

type Receiver = Client<typeof ReceiverService>;
type Assessor = Client<typeof AssessorService>;

/** One batch per reading on a SyncMetrics stream; the acknowledgements arrive in order, one per batch. */
async function sendSync(receiver: Receiver, metrics: Metric[], signal: AbortSignal): Promise<JsonValue[]> {
  async function* batches() {
    for (const [i, metric] of metrics.entries()) {
      yield create(SyncMetricsRequestSchema, { sequence: BigInt(i + 1), metrics: [metric] });
    }
  }
  const acks: JsonValue[] = [];
  for await (const ack of receiver.syncMetrics(batches(), { signal })) {
    if (ack.status && ack.status.code !== 0) {
      // Leaving the loop cancels the call.
      throw new Error(`batch ${ack.sequence} not written: ${codeName(ack.status.code)}: ${ack.status.message}`);
    }
    acks.push(json(SyncMetricsResponseSchema, ack));
  }
  if (acks.length !== metrics.length) throw new Error(`${acks.length} acknowledgements for ${metrics.length} batches`);
  return acks;
}

/** One batch per reading on a StreamMetrics client stream; one answer once every batch is in Kafka. */
async function sendStream(receiver: Receiver, metrics: Metric[], signal: AbortSignal): Promise<JsonValue[]> {
  async function* batches() {
    for (const metric of metrics) yield create(StreamMetricsRequestSchema, { metrics: [metric] });
  }
  const reply = await receiver.streamMetrics(batches(), { signal });
  return [json(StreamMetricsResponseSchema, reply)];
}

/** A query failed: which method, and why. */
class QueryFailed extends Error {
  constructor(
    readonly rpc: string,
    readonly error: ConnectError,
  ) {
    super(`${rpc}: ${describe(error)}`);
  }
}

/** The gRPC path of a method, e.g. /metrics.v1.ReceiverService/SyncMetrics. */
function rpcName(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * The reads of the sensor's data from the assessor, each answer under its name in the summary.
 * Another query (e.g. getSensorStats over the readings' time range, once the assessor implements
 * it) is one more entry.
 */
async function readOnce(assessor: Assessor, sensorId: string, signal: AbortSignal) {
  const timeoutMs = 5000;
  const call = <T>(rpc: string, answer: Promise<T>): Promise<T> =>
    answer.catch((error: unknown) => {
      throw new QueryFailed(rpc, ConnectError.from(error));
    });
  const [events, measurements] = await Promise.all([
    call(
      rpcName(AssessorService.method.getLegacyEvents),
      assessor.getLegacyEvents({ sensorUuid: sensorId }, { signal, timeoutMs }),
    ),
    call(
      rpcName(AssessorService.method.getLegacyMeasurements),
      assessor.getLegacyMeasurements({ sensorUuid: sensorId }, { signal, timeoutMs }),
    ),
  ]);
  return {
    answers: { events, measurements },
    json: {
      events: json(GetLegacyEventsResponseSchema, events),
      measurements: json(GetLegacyMeasurementsResponseSchema, measurements),
    },
  };
}

/**
 * Polls the assessor until it reports every sent reading (the last hour's mean and the maximum match
 * what was sent) and at least config.minEvents events, or until config.timeoutMs.
 */
async function readBack(assessor: Assessor, config: Config, metrics: Metric[], signal: AbortSignal) {
  const values = metrics.map((m) => m.value);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const max = Math.max(...values);
  const closeTo = (a: number | undefined, b: number) =>
    a !== undefined && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  const deadline = Date.now() + config.timeoutMs;
  for (;;) {
    let read;
    try {
      read = await readOnce(assessor, config.sensorId, signal);
    } catch (error) {
      // An unavailable assessor (e.g. restarting) is polled again until the deadline.
      const unavailable = error instanceof QueryFailed && error.error.code === Code.Unavailable;
      if (!unavailable || Date.now() >= deadline) throw error;
      await sleep(200, undefined, { signal });
      continue;
    }
    const { events, measurements } = read.answers;
    // The legacy measurements know only temperature, as the original system did.
    const stored =
      config.metricType !== "temperature" ||
      (closeTo(measurements.averageLastHour, mean) && measurements.maxLast30Days === max);
    const complete = stored && events.events.length >= config.minEvents;
    if (complete || Date.now() > deadline) return { read: read.json, complete };
    await sleep(200, undefined, { signal });
  }
}

async function run(config: Config): Promise<boolean> {
  const started = Date.now();
  const signal = AbortSignal.timeout(config.timeoutMs + 10_000);
  // One HTTP/2 connection for every call, closed at the end (also after an error, which may leave a
  // cancelled stream behind that would keep it open until its idle timeout).
  const connection = new Http2SessionManager(`http://${config.target}`);
  const transport = createGrpcTransport({ baseUrl: `http://${config.target}`, sessionManager: connection });
  const receiver = createClient(ReceiverService, transport);
  const assessor = createClient(AssessorService, transport);
  try {
    const metrics = readings(config);
    const rpc = rpcName(config.rpc === "sync" ? ReceiverService.method.syncMetrics : ReceiverService.method.streamMetrics);
    let responses: JsonValue[];
    try {
      responses = await (config.rpc === "sync" ? sendSync : sendStream)(receiver, metrics, signal);
    } catch (error) {
      throw new Error(`${rpc}: ${describe(error)}`);
    }
    const { read, complete } = await readBack(assessor, config, metrics, signal);
    const summary = {
      language: "typescript",
      target: config.target,
      sensorId: config.sensorId,
      rpc,
      sent: { metrics: metrics.map((m) => json(MetricSchema, m)), responses },
      read,
      complete,
      elapsedMs: Date.now() - started,
    };
    process.stdout.write(JSON.stringify(summary, null, 2) + "\n");
    return complete;
  } finally {
    connection.abort();
  }
}

/** An error as "CODE: message" for a failed call, else its message. */
function describe(error: unknown): string {
  if (error instanceof ConnectError) return `${codeName(error.code)}: ${error.rawMessage}`;
  return error instanceof Error ? error.message : String(error);
}

async function main(): Promise<number> {
  let config: Config;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (error) {
    console.error(`metrics-client: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  try {
    if (await run(config)) return 0;
    console.error(`metrics-client: the assessor did not report everything within ${config.timeoutMs / 1000} s`);
    return 3;
  } catch (error) {
    console.error(`metrics-client: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

process.exitCode = await main();
